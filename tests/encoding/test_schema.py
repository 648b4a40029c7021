"""validate_arguments and the schema-driven coercion of string="false" values."""

import pytest

from dsv4.encoding.schema import ArgumentsError, coerce_value, parameters_of, tool_parameters, validate_arguments

PARAMS = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "units": {"enum": ["c", "f"]},
        "stops": {"type": "array", "items": {"type": "object", "properties": {"at": {"type": "string"}}}},
    },
    "required": ["location"],
    "additionalProperties": False,
}
FUNCTION = {"name": "get_weather", "description": "Weather", "parameters": PARAMS}
TOOL = {"type": "function", "function": FUNCTION}


@pytest.mark.parametrize("schema", [TOOL, FUNCTION, PARAMS])
def test_accepts_all_three_schema_shapes(schema):
    assert parameters_of(schema) is PARAMS
    assert validate_arguments(schema, '{"location": "Paris", "days": 2}') == {"location": "Paris", "days": 2}
    assert validate_arguments(schema, {"location": "Oslo"}) == {"location": "Oslo"}


@pytest.mark.parametrize(
    "arguments, path, fragment",
    [
        ('{"location": 3}', "arguments.location", "is not of type 'string'"),
        ('{"location": "x", "days": 0}', "arguments.days", "less than the minimum"),
        ('{"location": "x", "units": "k"}', "arguments.units", "is not one of"),
        ('{"location": "x", "stops": [{"at": "a"}, {"at": 5}]}', "arguments.stops[1].at", "is not of type"),
        ('{"days": 2}', "arguments", "'location' is a required property"),
        ('{"location": "x", "extra": 1}', "arguments", "Additional properties"),
        ('{"location": ', "arguments", "not valid JSON"),
        ("[1]", "arguments", "must be a JSON object"),
    ],
)
def test_violations_name_their_path(arguments, path, fragment):
    with pytest.raises(ArgumentsError) as err:
        validate_arguments(TOOL, arguments)
    assert err.value.path == path and isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)


def test_function_without_parameters_takes_any_object():
    assert validate_arguments({"name": "ping"}, "{}") == {}


def test_tool_parameters_maps_names():
    assert tool_parameters([TOOL, {"name": "ping"}]) == {"get_weather": PARAMS, "ping": {"type": "object"}}


@pytest.mark.parametrize(
    "raw, schema, text, changed",
    [
        ("3", {"type": "integer"}, "3", False),
        (" [1, 2] ", None, " [1, 2] ", False),
        ("three", None, '"three"', True),
        ("NaN", None, '"NaN"', True),
        ("3", {"type": "string"}, '"3"', True),
        ('"4"', {"type": "integer"}, "4", True),
        ("2.0", {"type": "integer"}, "2.0", False),
        ("2.5", {"type": "integer"}, "2.5", False),
        ("yes", {"type": "boolean"}, '"yes"', True),
        ("False", {"type": "boolean"}, "false", True),
        ("None", {"type": ["null", "string"]}, "null", True),
        ("{'a': 1}", {"type": "object"}, '{"a": 1}', True),
        ("1e999", {"type": "number"}, "1e999", False),  # valid JSON text, if beyond float range
        ("x", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, '"x"', True),
        ('"c"', {"enum": ["c", "f"]}, '"c"', False),
    ],
)
def test_coerce_value(raw, schema, text, changed):
    out, note = coerce_value(raw, schema)
    assert out == text and (note is not None) == changed

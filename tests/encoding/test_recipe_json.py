"""JSON numbers in the `ga` prompt exactly as deepseek-recipe 0.2.0 writes them (serde_json), each case checked
against the recipe itself; the preview dialect keeps Python's spelling (DeepSeek's Python encoder)."""

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv4.encoding import recipe_json
from dsv4.encoding.errors import EncodingError
from dsv4.encoding.render import encode_messages

from .recipe_oracle import recipe_render

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

# argument text -> the parameter value the recipe renders
SPELLINGS = {
    "1e-7": "1e-7", "1e-07": "1e-7", "1E5": "100000.0", "1e5": "100000.0", "-0": "-0.0", "-0.0": "-0.0",
    "0": "0", "-0e5": "-0.0", "1e-5": "0.00001", "2.5e-5": "0.000025", "1e-6": "1e-6", "1e15": "1000000000000000.0",
    "1e16": "1e+16", "1.5e20": "1.5e+20", "0.1e1": "1.0", "100e-2": "1.0", "1.7976931348623157e308":
    "1.7976931348623157e+308", "5e-324": "5e-324", "1e-400": "0.0", "-1e-400": "-0.0",
    "0.30000000000000004": "0.30000000000000004", "18446744073709551615": "18446744073709551615",
    "18446744073709551616": "1.8446744073709552e+19", "-9223372036854775808": "-9223372036854775808",
    "-9223372036854775809": "-9.223372036854776e+18", "123456789012345678901234": "1.2345678901234569e+23",
    "[1E5, {\"k\": 1e-7}]": "[100000.0, {\"k\": 1e-7}]",
}


def conversation(arguments) -> list[dict]:
    return [{"role": "system", "content": "S", "tools": TOOLS}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}]


def parameter(prompt: str) -> str:
    return re.search(r'name="x" string="false">(.*?)</｜DSML｜parameter>', prompt).group(1)


@pytest.mark.parametrize("text", SPELLINGS)
def test_argument_numbers_render_as_the_recipe_writes_them(text):
    msgs = conversation(f'{{"x": {text}}}')
    ours = encode_messages(msgs)
    assert ours == recipe_render(msgs)
    assert parameter(ours) == SPELLINGS[text]


def test_preview_keeps_pythons_spelling():
    """DeepSeek's Python encoder (json.loads + json.dumps) is the preview dialect's reference."""
    msgs = conversation('{"x": [1e-7, -0, 123456789012345678901234, 1e16]}')
    assert parameter(encode_messages(msgs, dialect="preview")) == "[1e-07, 0, 123456789012345678901234, 1e+16]"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_dict_arguments_are_refused_by_name(value):
    with pytest.raises(EncodingError, match=r"messages\[2\]\.tool_calls\[0\]\.function\.arguments: -?(NaN|Infinity)"):
        encode_messages(conversation({"x": value}))


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1.7976931348623159e308"])
def test_numbers_serde_cannot_read_are_refused_by_name(text):
    """The recipe falls back to one `arguments` string parameter holding the raw text; dsv4 refuses them, as it
    refuses arguments that are not JSON (test_render_ga REJECTED)."""
    msgs = conversation(f'{{"x": {text}}}')
    with pytest.raises(EncodingError, match=re.escape("tool_calls[0].function.arguments: ") + ".*" + re.escape(text)):
        encode_messages(msgs)
    assert f'<｜DSML｜parameter name="arguments" string="true">{{"x": {text}}}<' in recipe_render(msgs)


def test_schema_numbers_render_as_the_recipe_writes_them():
    schema = {"type": "object", "properties": {"x": {
        "type": "number", "minimum": 1e-7, "maximum": 123456789012345678901234, "multipleOf": 1e16}}}
    msgs = [{"role": "system", "content": "S", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": schema}}]}, {"role": "user", "content": "u"}]
    ours = encode_messages(msgs)
    assert ours == recipe_render(msgs)
    assert '"minimum": 1e-7, "maximum": 1.2345678901234569e+23, "multipleOf": 1e+16' in ours
    msgs = [{"role": "system", "content": "S", "response_format": {"type": "json_schema", "json_schema": {
        "name": "a", "schema": {"type": "number", "minimum": 2.5e-5, "maximum": -0.0}}}},
        {"role": "user", "content": "u"}]
    ours = encode_messages(msgs)
    assert ours == recipe_render(msgs)
    assert '{"type": "number", "minimum": 0.000025, "maximum": -0.0}' in ours


def test_non_finite_schema_numbers_are_refused_by_name():
    msgs = [{"role": "system", "content": "S", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "number", "maximum": math.inf}}}]}, {"role": "user", "content": "u"}]
    with pytest.raises(EncodingError, match=r"tools\[f\]\.parameters: Infinity"):
        encode_messages(msgs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**80), 2**80), min_size=1))
def test_any_number_renders_as_the_recipe_writes_it(values):
    msgs = conversation(json.dumps({"x": values}))
    assert parameter(encode_messages(msgs)) == parameter(recipe_render(msgs))


def test_reads_back_what_it_writes():
    for text in SPELLINGS:
        value = recipe_json.loads(text)
        assert recipe_json.dumps(recipe_json.loads(recipe_json.dumps(value))) == recipe_json.dumps(value)

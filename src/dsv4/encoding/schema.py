"""Tool schemas: validating call arguments with jsonschema (its regexes in bounded time, `schema_regex`), and
the schema-driven value coercion the tolerant parser applies to `string="false"` parameters."""

import ast
import json
import math
import re

import jsonschema

from .schema_regex import DEFAULT_BUDGET_S, PatternFailure, RegexBudget, bounded_validator, current_budget


class ArgumentsError(ValueError):
    """Tool-call arguments that are not JSON or break the tool's schema; `path` locates the violation."""

    def __init__(self, message: str, *, path: str = "arguments"):
        super().__init__(f"{path}: {message}")
        self.path = path


def parameters_of(tool_schema: dict) -> dict:
    """The parameters schema of an OpenAI tool `{"type": "function", "function": {...}}`, of a function
    object `{"name", "parameters"}`, or of a bare parameters schema."""
    if not isinstance(tool_schema, dict):
        raise TypeError(f"tool schema must be a dict, got {type(tool_schema).__name__}")
    if isinstance(tool_schema.get("function"), dict):
        tool_schema = tool_schema["function"]
    if "name" in tool_schema and "properties" not in tool_schema:
        return tool_schema.get("parameters") or {"type": "object"}
    return tool_schema


def tool_parameters(tools) -> dict[str, dict]:
    """Map tool name -> parameters schema for a list of OpenAI tools or function objects."""
    out = {}
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = parameters_of(fn)
    return out


def _path(parts) -> str:
    return "arguments" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate_arguments(tool_schema: dict, arguments: str | dict, *, regex_budget_s: float = DEFAULT_BUDGET_S) -> dict:
    """Check `arguments` (JSON text or a dict) against the tool's parameters; return them as a dict.

    Raises `ArgumentsError` naming the path of the first (best-matching) violation. The schema's regexes run in
    linear time where RE2 can run them and within `regex_budget_s` seconds in all where it cannot (the regex
    module counts its process's CPU time, so on a loaded machine the wall time is longer); a pattern that is
    invalid or runs out of that budget is an `ArgumentsError` naming it (the arguments are refused).
    """
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ArgumentsError(f"not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(arguments, dict):
        raise ArgumentsError(f"must be a JSON object, got {type(arguments).__name__}")
    schema = parameters_of(tool_schema)
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    if {"unevaluatedProperties", "patternProperties"} <= _keys(schema):
        raise ArgumentsError("the tool schema combines unevaluatedProperties with patternProperties, whose regexes"
                             " jsonschema would run unbounded there; not supported")
    budget = RegexBudget.start(regex_budget_s)
    token = current_budget.set(budget)
    try:
        errors = list(bounded_validator(base)(schema).iter_errors(arguments))
    finally:
        current_budget.reset(token)
    if budget.failure is not None:  # even where a `not` or an `anyOf` swallowed it: the check is incomplete
        failure = _first_failure(errors)
        raise ArgumentsError(budget.failure, path=_path(failure.absolute_path) if failure else "arguments")
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        raise ArgumentsError(error.message, path=_path(error.absolute_path))
    return arguments


def _keys(schema) -> set[str]:
    """Every key of every object in a schema document."""
    if isinstance(schema, list):
        return set().union(*map(_keys, schema))
    if not isinstance(schema, dict):
        return set()
    return set(schema).union(*map(_keys, schema.values()))


def _first_failure(errors) -> PatternFailure | None:
    for e in errors:
        found = e if isinstance(e, PatternFailure) else _first_failure(e.context)
        if found is not None:
            return found
    return None


# ---- coercion of string="false" values ------------------------------------------------------------------

_PRIORITY = ("null", "integer", "number", "boolean", "object", "array", "string")
_INT = re.compile(r"[-+]?\d+")


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str):
    """`json.loads` that refuses NaN and Infinity; raises ValueError."""
    return json.loads(text, parse_constant=_reject_constant)


def schema_types(schema) -> set[str] | None:
    """The JSON types a schema admits, or None when it does not say."""
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    types: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            sub_types = schema_types(sub)
            if sub_types is None:
                return None
            types |= sub_types
    for v in schema.get("enum") or ([schema["const"]] if "const" in schema else []):
        types.add(json_type(v))
    return types or None


def json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(v), "object")


def _admits(types: set[str], v) -> bool:
    t = json_type(v)
    return t in types or (t == "integer" and "number" in types)


def _as_type(t: str, text: str):
    """`text` read as JSON type `t`; raises ValueError when it cannot be."""
    s = text.strip()
    if t == "null" and s.lower() in ("null", "none"):
        return None
    if t == "boolean" and s.lower() in ("true", "false"):
        return s.lower() == "true"
    if t == "integer":
        if _INT.fullmatch(s):
            return int(s)
        f = float(s)
        if f.is_integer():
            return int(f)
    if t == "number":
        f = float(s)
        if math.isfinite(f):
            return int(s) if _INT.fullmatch(s) else f
    if t in ("object", "array"):
        v = ast.literal_eval(s)
        if isinstance(v, dict if t == "object" else (list, tuple)):
            json.dumps(v)
            return v
    if t == "string":
        return text
    raise ValueError(f"not a {t}")


def coerce_value(raw: str, schema: dict | None) -> tuple[str, str | None]:
    """JSON text for a `string="false"` value: `raw` itself when it is JSON the schema admits, else the
    first reading of it the schema admits, else `raw` as a JSON string. The second item says what changed."""
    try:
        value, ok = loads_strict(raw), True
    except (ValueError, RecursionError):
        value, ok = None, False
    types = schema_types(schema)
    if ok and (types is None or _admits(types, value)):
        return raw, None
    text = value if ok and isinstance(value, str) else raw
    for t in _PRIORITY if types else ():
        if t in types:
            try:
                return json.dumps(_as_type(t, text), ensure_ascii=False), f"coerced to {t} by the tool schema"
            except Exception:  # any failure means "not readable as t"; literal_eval raises many kinds
                continue
    if ok:
        return raw, None
    return json.dumps(raw, ensure_ascii=False), "not valid JSON; kept as a string"


def is_wrapper_key(key: str, schema: dict | None) -> bool:
    """Whether `key` is an `arguments`/`input` wrapper that the tool's schema does not define."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    return key in ("arguments", "input") and isinstance(props, dict) and key not in props


def unwrap_wrapper(key: str, value_json: str, schema: dict | None) -> dict | None:
    """The inner object of a lone wrapper parameter, when its keys are all in the tool's schema."""
    if not is_wrapper_key(key, schema):
        return None
    props = schema["properties"]
    try:
        inner = loads_strict(value_json)
        if isinstance(inner, str):
            inner = loads_strict(inner)
    except (ValueError, RecursionError):
        return None
    if isinstance(inner, dict) and set(inner) <= set(props):
        return inner
    return None

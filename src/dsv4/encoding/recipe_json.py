"""JSON numbers as deepseek-recipe reads and writes them: the `ga` dialect renders every JSON value in the prompt
(tool-call parameters, tool schemas, response-format schemas) as the recipe does after parsing the request
with serde_json (float_roundtrip on, checked against the recipe on inputs where the two serde parsers differ).

Reading: an integer stays exact within u64, or i64 when negative; beyond that it becomes the nearest float
(`123456789012345678901234` -> 1.2345678901234569e+23), and `-0` is the float -0.0. NaN, Infinity and numbers
beyond the float range (`1e400`) are not JSON to serde: the recipe then renders the whole arguments text as a
single string parameter named `arguments`; dsv4 refuses them by name instead, as it refuses arguments that are
not JSON.
Writing (serde_json's formatter, zmij): the shortest digits that read back to the same float, in fixed notation
for decimal exponents -5..15 (`0.00001`, `1000000000000000.0`) and otherwise `d.ddde±x` with the exponent
unpadded (`1e-7`, `1.5e+20`), where Python writes `1e-07` and switches to exponents from 1e-05 and 1e+16.
"""

import json
import math
from decimal import Decimal

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
FIXED_EXPONENTS = range(-5, 16)


def _read_float(text: str) -> float:
    f = float(text)  # correctly rounded, as serde_json's float_roundtrip parser
    if math.isinf(f):
        raise ValueError(f"the number {text} is beyond the float range (deepseek-recipe's JSON parser refuses it)")
    return f


def _read_int(text: str) -> int | float:
    n = int(text)
    if text.startswith("-"):
        if n == 0:
            return -0.0  # serde_json reads `-0` as a float to keep its sign
        return n if n >= I64_MIN else _read_float(text)
    return n if n <= U64_MAX else _read_float(text)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON (deepseek-recipe's JSON parser refuses it)")


def loads(text: str):
    """JSON text read as the recipe reads it; raises ValueError for text it refuses (invalid JSON, NaN, 1e400)."""
    return json.loads(text, parse_int=_read_int, parse_float=_read_float, parse_constant=_refuse_constant)


def read(value):
    """A Python value as the recipe reads it once it is sent as JSON (big ints become floats, tuples lists)."""
    return loads(json.dumps(value, ensure_ascii=False))


def format_float(x: float) -> str:
    """A finite float as serde_json writes it."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()  # repr: the shortest round-trip digits
    k = len(digit_tuple) + exponent - 1  # decimal exponent of the leading digit
    d = "".join(map(str, digit_tuple)).rstrip("0")
    if k in FIXED_EXPONENTS:
        if len(d) <= k + 1:
            body = d + "0" * (k + 1 - len(d)) + ".0"
        elif k >= 0:
            body = d[: k + 1] + "." + d[k + 1:]
        else:
            body = "0." + "0" * (-k - 1) + d
    else:
        body = d[0] + ("." + d[1:] if len(d) > 1 else "") + ("e-" if k < 0 else "e+") + str(abs(k))
    return "-" + body if sign else body


def dumps(value) -> str:
    """JSON text of a value returned by `loads` or `read`, as the recipe writes it: `", "` and `": "`
    separators, key order kept, non-ASCII kept, floats by `format_float`."""
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)

"""Hypothesis strategies for OpenAI-format chat conversations in the shapes DeepSeek-V4 agents produce."""

import json
import math

from hypothesis import strategies as st

# Text that stresses rendering: markup-like characters, quotes, newlines, non-ASCII and astral code points.
TEXT_ALPHABET = st.one_of(
    st.sampled_from(list("abcxyz XYZ019 \n\t<>/\"'=&{}[]:,\\|")),
    st.sampled_from(["é", "日", "本", "—", "😀", "｜", "▁"]),
)
texts = st.text(TEXT_ALPHABET, max_size=24)
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


class JsonText(str):
    """A JSON number spelled as an argument text may spell it (`1E5`, `-0`, `2.50e+3`): written verbatim."""


# Numbers where the recipe's serde_json and Python's json part: exponents (`1e-7` vs `1e-07`, fixed notation
# down to 1e-5 and up to 1e15), integers beyond u64 / below i64 (read as floats), -0, subnormals, and floats
# whose shortest form needs 17 significant digits.
EDGE_NUMBERS = [2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 123456789012345678901234, 10**23, 9007199254740993,
                -0.0, 1e-7, 1e-5, 1e-6, 2.5e-5, 1e15, 1e16, 1.5e20, 1e300, 5e-324, 2.2250738585072014e-308,
                1.7976931348623157e308, 0.1 + 0.2, 1 / 3, 1e22, 1e21, 100.0]
numbers = st.one_of(
    st.integers(-10**6, 10**6), st.integers(-(2**70), 2**70), st.sampled_from(EDGE_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e6, 1e6).map(lambda f: round(f, 3)),
)


@st.composite
def number_spellings(draw) -> JsonText:
    """Any finite JSON number grammar allows, in spellings Python never writes: `-0`, `1E5`, `0.10e+01`."""
    whole = draw(st.sampled_from(["0", "1", "7", "12", "123456789", "12345678901234567890123"]))
    text = draw(st.sampled_from(["", "-"])) + whole
    if draw(st.booleans()):
        text += "." + draw(st.from_regex(r"[0-9]{1,20}", fullmatch=True))
    if draw(st.booleans()):
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + str(draw(st.integers(0, 330)))
    return JsonText(text) if math.isfinite(float(text)) else JsonText(whole)


json_scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)
arguments = st.dictionaries(names, json_values, max_size=4)
spelled_values = st.recursive(st.one_of(json_scalars, number_spellings()), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)


def json_text(value) -> str:
    """JSON text with each `JsonText` number written as spelled."""
    if isinstance(value, JsonText):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# Call arguments: a dict (which dsv4 takes as is and the recipe as Python's JSON of it) or JSON text.
call_arguments = st.one_of(arguments, st.dictionaries(names, spelled_values, max_size=4).map(json_text))


def assistant_turn(draw, n_call: int, *, title_tasks: bool = False) -> tuple[dict, list[dict]]:
    """An assistant message (maybe reasoning, maybe tool calls numbered after `n_call`) and the tool results
    answering its calls, in a random order."""
    a = {"role": "assistant", "content": draw(texts)}
    if draw(st.booleans()):
        a["reasoning_content"] = draw(texts)
    calls = []
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            n_call += 1
            calls.append({"id": f"call_{n_call}", "type": "function",
                          "function": {"name": draw(names), "arguments": draw(call_arguments)}})
        a["tool_calls"] = calls
    if title_tasks and draw(st.integers(0, 8)) == 0:
        a["task"] = "title"
    results = [{"role": "tool", "tool_call_id": tc["id"], "content": draw(texts)}
               for tc in (draw(st.permutations(calls)) if calls else [])]
    return a, results


@st.composite
def tool_defs(draw) -> list[dict]:
    tools = []
    strict = draw(st.integers(0, 3)) == 0  # the recipe rejects strict and non-strict tools mixed
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        # Strict schemas stay within the rules dsv4 reproduces (the recipe also demands `items` on arrays and
        # properties on nested objects, and drops keys it does not know).
        kinds = ["string", "integer", "number", "boolean"] + ([] if strict else ["array", "object"])
        props = {p: {"type": draw(st.sampled_from(kinds))} for p in draw(st.lists(names, max_size=3, unique=True))}
        fn = {"name": name, "description": draw(texts),
              "parameters": {"type": "object", "properties": props, "required": list(props)[:1]}}
        if strict:
            fn["strict"] = True
            fn["parameters"]["required"] = draw(st.permutations(list(props)))
            if props and draw(st.booleans()):  # a nested object schema, normalized too in strict mode
                fn["parameters"]["properties"][next(iter(props))] = {
                    "type": "object", "properties": {"inner": {"type": "string"}}}
            if draw(st.integers(0, 4)) == 0:  # the recipe rejects a strict tool that leaves a property optional
                fn["parameters"]["required"] = fn["parameters"]["required"][1:]
        if draw(st.integers(0, 5)) == 0:
            del fn["description"]
        tools.append({"type": "function", "function": fn})
    return tools


@st.composite
def conversations(draw, *, allow_prefix: bool = True) -> dict:
    """A request: messages (tools on the first system message), thinking mode and effort."""
    with_tools = draw(st.booleans())
    msgs: list[dict] = []
    if draw(st.booleans()) or with_tools:
        msgs.append({"role": "system", "content": draw(texts)})
    if with_tools:
        msgs[0]["tools"] = draw(tool_defs())
    n_call = 0
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 5)) == 0:
            msgs.append({"role": "latest_reminder", "content": draw(texts)})
        msgs.append({"role": "user", "content": draw(texts)})
        for _ in range(draw(st.integers(0, 3))):
            a, results = assistant_turn(draw, n_call)
            n_call += len(results)
            msgs += [a, *results]
            if not results:
                break
        if draw(st.integers(0, 6)) == 0:
            msgs.append({"role": "system", "content": draw(texts)})
    if msgs[0]["role"] == "system" and draw(st.integers(0, 4)) == 0:
        msgs[0]["response_format"] = draw(st.sampled_from([
            {"type": "text"},
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
                "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}},
        ]))
        if msgs[0]["response_format"]["type"] == "json_object":
            msgs[0]["content"] += " Reply in JSON."
    uses_tools = any(m.get("tools") or m.get("tool_calls") for m in msgs)
    if allow_prefix and not uses_tools and msgs[-1]["role"] == "user" and draw(st.integers(0, 4)) == 0:
        prefix = {"role": "assistant", "content": draw(texts), "prefix": True}
        if draw(st.booleans()):
            prefix["reasoning_content"] = draw(texts)
        msgs.append(prefix)
    choices = [None]
    if with_tools:
        first = msgs[0]["tools"][0]["function"]["name"]
        choices += ["auto", "none", "required", {"type": "function", "function": {"name": first}}]
    return {
        "messages": msgs,
        "tool_choice": draw(st.sampled_from(choices)),
        "thinking_mode": draw(st.sampled_from(["thinking", "chat"])),
        "reasoning_effort": draw(st.sampled_from([None, "none", "minimal", "low", "medium", "high", "xhigh",
                                                  "max", "ultra"])),
    }

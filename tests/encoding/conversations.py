"""Hypothesis strategies for OpenAI-format chat conversations in the shapes DeepSeek-V4 agents produce."""

from hypothesis import strategies as st

# Text that stresses rendering: markup-like characters, quotes, newlines, non-ASCII and astral code points.
TEXT_ALPHABET = st.one_of(
    st.sampled_from(list("abcxyz XYZ019 \n\t<>/\"'=&{}[]:,\\|")),
    st.sampled_from(["é", "日", "本", "—", "😀", "｜", "▁"]),
)
texts = st.text(TEXT_ALPHABET, max_size=24)
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), texts,
    st.sampled_from([0.5, -2.25, 3.0, 1e-3, 123.456]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)
arguments = st.dictionaries(names, json_values, max_size=4)


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
                          "function": {"name": draw(names), "arguments": draw(arguments)}})
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

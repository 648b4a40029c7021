"""parse(render(assistant)) == assistant: what the renderer writes, the strict parser reads back exactly
(the ga dialect's numbers as deepseek-recipe reads them: an integer beyond u64 comes back as a float)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv4.encoding import encode_messages, parse_completion, recipe_json
from dsv4.encoding.tokens import BOS, DSML, EOS, THINK_END, THINK_START

from .conversations import call_arguments, names, texts

MARKERS = (BOS, EOS, THINK_START, THINK_END, DSML, "</think", "<｜", "｜DSML")
clean = texts.filter(lambda t: not any(m in t for m in MARKERS))
SYSTEM = {"role": "system", "content": "S", "tools": [{"type": "function", "function": {"name": "f"}}]}


@st.composite
def assistants(draw) -> dict:
    msg = {"role": "assistant", "content": draw(clean), "reasoning_content": draw(clean)}
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": draw(names), "arguments": as_text(draw(call_arguments))}}
             for i in range(draw(st.integers(0, 3)))]
    if calls:
        msg["tool_calls"] = calls
    return msg


def as_text(arguments: dict | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assistants(), st.sampled_from(["ga", "preview"]))
def test_parse_inverts_render(msg, dialect):
    history = [SYSTEM, {"role": "user", "content": "u"}]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "r"} for c in msg.get("tool_calls", [])]
    effort = "low" if dialect == "ga" else None
    header = encode_messages(history, dialect=dialect, reasoning_effort=effort)
    full = encode_messages(history + [msg] + results, dialect=dialect, reasoning_effort=effort)
    completion = full[len(header): full.index(EOS, len(header)) + len(EOS)]
    parsed = parse_completion(completion)
    read = recipe_json.loads if dialect == "ga" else json.loads
    assert parsed.reasoning_content == msg["reasoning_content"]
    assert parsed.content == msg["content"]
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == \
        [(c["function"]["name"], read(c["function"]["arguments"])) for c in msg.get("tool_calls", [])]
    assert parsed.warnings == []

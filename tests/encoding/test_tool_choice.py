"""tool_choice: none removes the tools; required/named open the tool-call block in the prompt itself."""

import json

import pytest

from dsv4.encoding import FORCED_TOOL_CALLS, EncodingError, StreamParser, encode_messages, fold_events

from .recipe_oracle import recipe_render

TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
    "q": {"type": "string"}}}}} for n in ("search", "fetch")]
MSGS = [{"role": "system", "content": "S", "tools": TOOLS}, {"role": "user", "content": "find dsv4"}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "fetch"}}])
def test_forced_choice_opens_the_block_and_the_parser_reads_on_from_there(choice):
    prompt = encode_messages(MSGS, thinking_mode="chat", tool_choice=choice)
    assert prompt.endswith("<｜Assistant｜></think>" + FORCED_TOOL_CALLS)
    assert prompt == recipe_render(MSGS, thinking_mode="chat", tool_choice=choice)
    if isinstance(choice, dict):
        assert '"name": "search"' not in prompt and '"name": "fetch"' in prompt
    completion = ('<｜DSML｜invoke name="fetch">\n<｜DSML｜parameter name="q" string="true">dsv4</｜DSML｜parameter>\n'
                  '</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>')
    parser = StreamParser(thinking_mode="chat", tools=TOOLS)
    events = parser.feed(FORCED_TOOL_CALLS) + parser.feed(completion) + parser.finish()
    message = fold_events(events, thinking_mode="chat")
    assert [(c.name, json.loads(c.arguments)) for c in message.tool_calls] == [("fetch", {"q": "dsv4"})]
    assert message.content == "" and message.warnings == []


def test_none_offers_no_tools_and_keeps_no_reasoning():
    msgs = MSGS + [{"role": "assistant", "content": "x", "reasoning_content": "r"}, {"role": "user", "content": "y"}]
    prompt = encode_messages(msgs, tool_choice="none", reasoning_effort="low")
    assert "## Tools" not in prompt and ">r</think>" not in prompt
    assert prompt == recipe_render(msgs, tool_choice="none", reasoning_effort="low")


@pytest.mark.parametrize("kwargs,match", [
    ({"tool_choice": "required", "thinking_mode": "chat", "dialect": "preview"}, "dialect='ga'"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "thinking_mode": "chat"}, "'nope'"),
    ({"tool_choice": "sometimes"}, "'sometimes'"),
])
def test_invalid_tool_choice(kwargs, match):
    with pytest.raises(EncodingError, match=match):
        encode_messages(MSGS, **kwargs)


def test_a_forced_choice_in_thinking_mode_lets_the_model_reason_first():
    # The engine's grammar forces the call after </think>; the prompt itself ends in <think> (the named choice
    # still offers only the named tool, as in thinking-off mode).
    named = {"type": "function", "function": {"name": TOOLS[0]["function"]["name"]}}
    for choice in ("required", named):
        prompt = encode_messages(MSGS, tool_choice=choice)
        assert prompt.endswith("<｜Assistant｜><think>")

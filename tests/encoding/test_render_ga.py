"""The `ga` dialect against DeepSeek's deepseek-recipe 0.2.0, byte for byte."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings

from dsv4.encoding.errors import EncodingError
from dsv4.encoding.render import encode_messages

from .conftest import first_difference
from .conversations import conversations
from .recipe_oracle import recipe_render


def forced_in_thinking(req: dict) -> bool:
    choice = req["tool_choice"]
    forced = choice == "required" or isinstance(choice, dict)
    return forced and req["thinking_mode"] == "thinking" and req["reasoning_effort"] != "none"


def without_forcing(req: dict) -> dict:
    """A forced tool_choice in thinking mode as dsv4 renders it (the recipe refuses it): the prompt of "auto" with
    only the named tool offered; the engine's grammar forces the call after the reasoning."""
    choice, messages = req["tool_choice"], req["messages"]
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        messages = [{**m, "tools": [t for t in m["tools"] if t["function"]["name"] == name]} if m.get("tools") else m
                    for m in messages]
    return {**req, "messages": messages, "tool_choice": "auto"}


def check_against_recipe(req: dict) -> None:
    if forced_in_thinking(req):
        try:
            ours = encode_messages(**req, dialect="ga")
        except EncodingError:  # refused for another reason: the recipe refuses it with thinking off too
            with pytest.raises(Exception):  # noqa: B017  (the recipe's own error types)
                recipe_render(req["messages"], thinking_mode="chat", reasoning_effort=req["reasoning_effort"],
                              tool_choice=req["tool_choice"])
            return
        assert ours == encode_messages(**without_forcing(req), dialect="ga")
        req = without_forcing(req)
    try:
        expected = recipe_render(req["messages"], thinking_mode=req["thinking_mode"],
                                 reasoning_effort=req["reasoning_effort"], tool_choice=req["tool_choice"])
    except Exception:  # a request the recipe rejects is rejected by dsv4 as well
        with pytest.raises(EncodingError):
            encode_messages(**req, dialect="ga")
        return
    ours = encode_messages(**req, dialect="ga")
    assert ours == expected, first_difference(ours, expected)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_prompts_byte_identical_to_recipe(req):
    check_against_recipe(req)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_prompts_byte_identical_to_recipe_many(req):
    check_against_recipe(req)


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["location"]}}}]


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_worked_example_b_tools_keep_all_reasoning():
    """Spec 4.3: with tools defined, reasoning before the last user turn survives."""
    msgs = [
        {"role": "system", "content": "SYS", "tools": TOOLS},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "reasoning_content": "Need two calls.", "tool_calls": [
            call("a", "get_weather", {"location": "Paris", "days": 2}),
            call("b", "get_weather", {"location": "Rome"})]},
        {"role": "tool", "tool_call_id": "b", "content": "Rome: 20C"},
        {"role": "tool", "tool_call_id": "a", "content": "Paris: 15C"},
        {"role": "assistant", "content": "Paris 15C, Rome 20C.", "reasoning_content": "Got both."},
        {"role": "user", "content": "Thanks. And Oslo?"},
    ]
    prompt = encode_messages(msgs, reasoning_effort="low")
    assert prompt.startswith("<｜begin▁of▁sentence｜>SYS\n\n## Tools\n\n")
    assert prompt.endswith(
        '<｜User｜>Weather in Paris and Rome?<｜Assistant｜><think>Need two calls.</think>\n\n<｜DSML｜tool_calls>\n'
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="location" string="true">Paris</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="location" string="true">Rome</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        '</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜User｜><tool_result>Paris: 15C</tool_result>\n\n'
        '<tool_result>Rome: 20C</tool_result><｜Assistant｜><think>Got both.</think>Paris 15C, Rome 20C.'
        '<｜end▁of▁sentence｜><｜User｜>Thanks. And Oslo?<｜Assistant｜><think>')
    assert prompt == recipe_render(msgs, reasoning_effort="low")


def test_worked_example_c_tool_history_without_tools_drops_reasoning():
    """Spec 4.4: tool history but no `tools` on the request: the in-loop reasoning is dropped."""
    msgs = [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "reasoning_content": "Need call.",
             "tool_calls": [call("c1", "get_weather", {"location": "Paris"})]},
            {"role": "tool", "tool_call_id": "c1", "content": "15C"}]
    prompt = encode_messages(msgs, reasoning_effort="low")
    assert "Need call." not in prompt
    assert prompt.startswith("<｜begin▁of▁sentence｜><｜User｜>Weather?<｜Assistant｜></think>\n\n<｜DSML｜tool_calls>")
    assert prompt.endswith("<｜User｜><tool_result>15C</tool_result><｜Assistant｜><think>")


@pytest.mark.parametrize("effort,prefix", [
    (None, "Reasoning Effort: Absolute maximum"), ("high", "Reasoning Effort: Absolute maximum"),
    ("xhigh", "Reasoning Effort: Absolute maximum"), ("medium", "Reasoning Effort: Absolute maximum"),
    ("max", "Reasoning Effort: Beyond maximum \u2014"), ("ultra", "Reasoning Effort: Beyond maximum \u2014"),
    ("low", "<｜User｜>"), ("minimal", "<｜User｜>")])
def test_effort_tiers(effort, prefix):
    prompt = encode_messages([{"role": "user", "content": "hi"}], reasoning_effort=effort)
    assert prompt.startswith("<｜begin▁of▁sentence｜>" + prefix)
    assert prompt.endswith("<｜Assistant｜><think>")


def test_effort_none_and_chat_mode_render_non_think():
    for kw in ({"reasoning_effort": "none"}, {"thinking_mode": "chat", "reasoning_effort": "max"}):
        assert encode_messages([{"role": "user", "content": "hi"}], **kw) == \
            "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>"


REJECTED = {
    "unknown role": ([{"role": "robot", "content": "x"}], "messages[0].role"),
    "developer role": ([{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}], "messages[0].role"),
    "unmatched tool result": ([{"role": "user", "content": "a"},
                               {"role": "tool", "tool_call_id": "zz", "content": "r"}], "messages[1].tool_call_id"),
    "unanswered call": ([{"role": "user", "content": "a"},
                         {"role": "assistant", "content": "", "tool_calls": [call("1", "f", {})]},
                         {"role": "user", "content": "b"}], "messages[1].tool_calls"),
    "non-JSON arguments": ([{"role": "user", "content": "a"},
                            {"role": "assistant", "content": "", "tool_calls": [
                                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{x"}}]},
                            {"role": "tool", "tool_call_id": "1", "content": "r"}],
                           "messages[1].tool_calls[0].function.arguments"),
    "duplicate call ids": ([{"role": "user", "content": "a"},
                            {"role": "assistant", "content": "",
                             "tool_calls": [call("1", "f", {}), call("1", "f", {})]},
                            {"role": "tool", "tool_call_id": "1", "content": "r"}], "messages[1].tool_calls[1].id"),
    "assistant without content": ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None}],
                                  "messages[1].content"),
    "unfinished turn not last": ([{"role": "user", "content": "a"},
                                  {"role": "assistant", "content": "S", "prefix": True},
                                  {"role": "user", "content": "b"}], "messages[1].prefix"),
    "json_object without json": ([{"role": "system", "content": "s", "response_format": {"type": "json_object"}},
                                  {"role": "user", "content": "give"}], "response_format"),
    "empty": ([], "messages is empty"),
}


@pytest.mark.parametrize("name", REJECTED)
def test_invalid_requests_raise_encoding_error_naming_the_field(name):
    messages, where = REJECTED[name]
    with pytest.raises(EncodingError, match=re.escape(where)):
        encode_messages(messages)
    if name not in ("unknown role", "non-JSON arguments"):  # the recipe renders these two; dsv4 is stricter
        with pytest.raises(Exception):  # noqa: B017 - the recipe raises its own error types
            recipe_render(messages)


def test_bad_effort_is_rejected():
    with pytest.raises(EncodingError, match="'bogus'"):
        encode_messages([{"role": "user", "content": "hi"}], reasoning_effort="bogus")


def test_context_renders_only_the_continuation():
    history = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
               {"role": "assistant", "content": "b", "reasoning_content": "r"}]
    new = [{"role": "user", "content": "c"}]
    full = encode_messages(history + new)
    assert encode_messages(new, context=history) == full[len(encode_messages(history)) - len("<｜Assistant｜><think>"):]
    assert encode_messages(new, context=history) == "<｜User｜>c<｜Assistant｜><think>"

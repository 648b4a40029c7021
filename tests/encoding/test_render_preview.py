"""The `preview` dialect against outputs of DeepSeek's own April 2026 encoder (golden files)."""

import copy
import json
import re
from pathlib import Path

import pytest

from dsv4.encoding.errors import EncodingError
from dsv4.encoding.render import encode_messages

from .conftest import first_difference

CASES = [json.loads(line) for line in (Path(__file__).parent / "golden" / "preview_cases.jsonl").open()]


def render(case: dict) -> str:
    return encode_messages(case["messages"], context=case.get("context") or None, dialect="preview",
                           thinking_mode=case["thinking_mode"], reasoning_effort=case.get("reasoning_effort"),
                           drop_thinking=case.get("drop_thinking", True))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_prompt_byte_identical_to_reference(case):
    ours = render(case)
    assert ours == case["prompt"], first_difference(ours, case["prompt"])


def dict_arguments(case: dict) -> dict:
    case = copy.deepcopy(case)
    for m in case["messages"] + case.get("context", []):
        for tc in m.get("tool_calls") or []:
            tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
    return case


@pytest.mark.parametrize("case", [c for c in CASES if "tool_calls" in json.dumps(c["messages"])][:40])
def test_dict_arguments_render_as_their_own_parameters(case):
    """The deliberate fix (spec 5.6): dict arguments give the same prompt as their JSON text, never one
    `arguments` parameter wrapping the dict."""
    assert render(dict_arguments(case)) == case["prompt"]


def test_response_format_and_list_content():
    msgs = [{"role": "system", "content": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}],
             "response_format": {"type": "json_object"}},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert encode_messages(msgs, dialect="preview") == (
        '<｜begin▁of▁sentence｜>S1\n\nS2\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema'
        ' to reply:\n{"type": "json_object"}<｜User｜>a\n\nb<｜Assistant｜><think>')


def test_tool_result_parts_that_are_not_text_are_marked_unsupported():
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "t"}, {"type": "image_url"}]}]
    assert encode_messages(msgs, dialect="preview").endswith(
        "<｜User｜><tool_result>t\n\n[Unsupported image_url]</tool_result><｜Assistant｜><think>")


@pytest.mark.parametrize("messages,kwargs,where", [
    ([{"role": "user", "content": "u"}, {"role": "developer", "content": ""}], {}, "messages[1].content"),
    ([{"role": "user", "content": "u", "task": "summarize"}], {}, "messages[0].task"),
    ([{"role": "user", "content": "u"}], {"reasoning_effort": "low"}, "'low'"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], {}, "messages[0].content[0]"),
    ([{"role": "user", "content": "u"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "\"x\""}}]}], {},
     "messages[1].tool_calls[0].function.arguments: must encode a JSON object"),
])
def test_invalid_input_names_the_field(messages, kwargs, where):
    with pytest.raises(EncodingError, match=re.escape(where)):
        encode_messages(messages, dialect="preview", **kwargs)

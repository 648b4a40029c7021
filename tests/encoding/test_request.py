"""OpenAI request bodies -> the prompt's thinking mode: the parser must read the completion in the mode the
prompt was rendered in."""

import pytest

from dsv4.encoding import encode_request
from dsv4.encoding.request import thinking_mode_of
from dsv4.encoding.tokens import THINK_END, THINK_START

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("extra, mode", [
    ({}, "thinking"),
    ({"reasoning_effort": "max"}, "thinking"),
    ({"reasoning_effort": "none"}, "chat"),
    ({"thinking": {"type": "disabled"}}, "chat"),
    ({"thinking": {"type": "enabled"}}, "thinking"),
    ({"chat_template_kwargs": {"thinking": False}}, "chat"),
    ({"chat_template_kwargs": {"enable_thinking": False}}, "chat"),
])
def test_the_parse_mode_follows_the_rendered_prompt(extra, mode):
    request = {"messages": USER, **extra}
    prompt = encode_request(request)
    assert thinking_mode_of(request) == mode
    assert prompt.endswith(THINK_START if mode == "thinking" else THINK_END)

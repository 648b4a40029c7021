"""Anthropic's Messages API, read by the official `anthropic` client: content blocks as the model wrote them
(thinking, text, tool_use), the streamed events folding to the same message, the conversation (tool_use /
tool_result / thinking blocks) rendered as its chat-completions equivalent, stop reasons, errors in Anthropic's
form, token counting and x-api-key."""

import asyncio

import anthropic
import httpx2
import pytest

from dsv4.encoding import FORCED_TOOL_CALLS, encode_request
from dsv4.server import create_app
from tests.encoding.test_parse_strategies import render_calls

from .conftest import ScriptedBackend, client_for

TOOLS = [{"name": "get_weather", "description": "Weather of a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                           "required": ["city"]}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]
SCRIPT = "Paris needs a call.</think>Let me check." + render_calls([("get_weather", {"city": "Paris", "days": 2})])


def client(backend, api_key: str = "none", server_key: str | None = None) -> anthropic.AsyncAnthropic:
    # the anthropic SDK runs on httpx2 (the server's tests elsewhere use httpx)
    transport = httpx2.ASGITransport(app=create_app(backend, api_key=server_key))
    return anthropic.AsyncAnthropic(base_url="http://dsv4", api_key=api_key, max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport, base_url="http://dsv4"))


def create(backend, **body):
    return asyncio.run(client(backend).messages.create(model=backend.model_name, **body))


def streamed(backend, **body):
    async def main():
        async with client(backend).messages.stream(model=backend.model_name, **body) as s:
            kinds = [event.type async for event in s]
            return kinds, await s.get_final_message()

    return asyncio.run(main())


def blocks(message) -> list[tuple]:
    out = []
    for b in message.content:
        out.append((b.type, b.thinking if b.type == "thinking" else b.text if b.type == "text" else (b.name, b.input)))
    return out


def test_reply_blocks_whole_and_streamed(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPT)
    whole = create(backend, max_tokens=200, messages=USER, tools=TOOLS, system="Be brief.")
    want = [("thinking", "Paris needs a call."), ("text", "Let me check."),
            ("tool_use", ("get_weather", {"city": "Paris", "days": 2}))]
    assert blocks(whole) == want and whole.stop_reason == "tool_use" and whole.role == "assistant"
    assert whole.content[2].id.startswith("call_") and whole.usage.output_tokens == len(backend.encode(SCRIPT)) + 1
    kinds, final = streamed(backend, max_tokens=200, messages=USER, tools=TOOLS, system="Be brief.")
    assert blocks(final) == want and final.stop_reason == "tool_use"
    assert final.usage.model_dump() == whole.usage.model_dump()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and kinds.count("content_block_start") == 3
    prompt = encode_request({"messages": [{"role": "system", "content": "Be brief."}, *USER],
                             "tools": [{"type": "function", "function": {"name": "get_weather",
                                                                         "description": "Weather of a city.",
                                                                         "parameters": TOOLS[0]["input_schema"]}}]})
    assert backend.calls[0][0] == backend.encode(prompt) and backend.calls[0][1].max_tokens == 200


def test_a_tool_turn_renders_as_its_chat_completions_equivalent(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "</think>It is 15C.")
    conversation = [
        *USER,
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Need a call.", "signature": "x"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "15C"}]},
                                     {"type": "text", "text": "Thanks!"}]},
    ]
    reply = create(backend, max_tokens=50, messages=conversation, tools=TOOLS)
    assert blocks(reply) == [("text", "It is 15C.")] and reply.stop_reason == "end_turn"
    chat = [*USER,
            {"role": "assistant", "content": "", "reasoning_content": "Need a call.",
             "tool_calls": [{"id": "toolu_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
            {"role": "user", "content": "Thanks!"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                               "parameters": TOOLS[0]["input_schema"]}}]
    prompt = encode_request({"messages": chat, "tools": tools})
    assert backend.calls[0][0] == backend.encode(prompt)
    assert "<think>Need a call.</think>" in prompt  # the reasoning of the tool turn is kept


def test_forced_tool_and_stop_sequences(real_tokenizer):
    continuation = '<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Oslo' \
                   '</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>'
    backend = ScriptedBackend(real_tokenizer, continuation)
    reply = create(backend, max_tokens=100, messages=USER, tools=TOOLS, thinking={"type": "disabled"},
                   tool_choice={"type": "tool", "name": "get_weather"})
    assert blocks(reply) == [("tool_use", ("get_weather", {"city": "Oslo"}))] and reply.stop_reason == "tool_use"
    assert real_tokenizer.decode(backend.calls[0][0], skip_special_tokens=False).endswith(FORCED_TOOL_CALLS)

    backend = ScriptedBackend(real_tokenizer, "</think>one two STOP three")
    reply = create(backend, max_tokens=100, messages=USER, stop_sequences=["STOP"])
    assert blocks(reply) == [("text", "one two ")]
    assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "STOP")
    reply = create(ScriptedBackend(real_tokenizer, "</think>" + "word " * 50), max_tokens=5, messages=USER)
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 5


def test_count_tokens(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer)
    counted = asyncio.run(client(backend).messages.count_tokens(model=backend.model_name, messages=USER, tools=TOOLS))
    create(ScriptedBackend(real_tokenizer, "x"), max_tokens=5, messages=USER, tools=TOOLS)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                               "parameters": TOOLS[0]["input_schema"]}}]
    assert counted.input_tokens == len(backend.encode(encode_request({"messages": USER, "tools": tools})))


@pytest.mark.parametrize("body, status, says", [
    ({"messages": USER}, 400, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400,
     "'image' blocks are not supported"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "must be 'user' or 'assistant'"),
    ({"max_tokens": 5, "messages": USER, "model": "claude-opus-9"}, 404, "claude-opus-9"),
])
def test_errors_in_anthropic_form(real_tokenizer, body, status, says):
    backend = ScriptedBackend(real_tokenizer, "x")

    async def post():
        async with client_for(backend) as http:
            return await http.post("/v1/messages", json=body)

    r = asyncio.run(post())
    assert r.status_code == status and r.json()["type"] == "error" and says in r.json()["error"]["message"]
    assert not backend.calls


def test_x_api_key(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "</think>ok")
    ok = client(backend, api_key="k", server_key="k")  # the SDK sends x-api-key
    assert blocks(asyncio.run(ok.messages.create(model=backend.model_name, max_tokens=5, messages=USER))) == \
        [("text", "ok")]
    with pytest.raises(anthropic.AuthenticationError):
        bad = client(backend, api_key="no", server_key="k")
        asyncio.run(bad.messages.create(model=backend.model_name, max_tokens=5, messages=USER))

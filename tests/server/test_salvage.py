"""Tool-call salvage on the server: off unless `--salvage-tool-calls` or the request's `x_dsv4_salvage`; then a call
written as text comes back as a call (finish_reason tool_calls, `x_dsv4_warnings`), streamed as a tool-call delta
at the end, the content kept; look-alikes and undeclared tools stay text. The same on /v1/messages."""

import asyncio
import json

import anthropic
import httpx2
import openai
import pytest

from dsv4.server import create_app

from .conftest import ScriptedBackend, client_for, sse_events

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]
TEXT_CALL = 'Let me check.\n<tool_call name="get_weather">\n{"city": "Paris", "days": 2}\n</tool_call>'
SCRIPT = "I should call the tool.</think>" + TEXT_CALL


def post(backend, body: dict, **app) -> dict:
    async def main():
        async with client_for(backend, **app) as http:
            r = await http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, **body})
            return r.status_code, (r.json() if not body.get("stream") else sse_events(r.text))
    return asyncio.run(main())


@pytest.mark.parametrize("app, body", [({}, {"x_dsv4_salvage": True}), ({"salvage_tool_calls": True}, {})])
def test_a_call_written_as_text_comes_back_as_a_call(real_tokenizer, app, body):
    status, r = post(ScriptedBackend(real_tokenizer, SCRIPT), body, **app)
    assert status == 200
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == \
        {"city": "Paris", "days": 2}
    assert choice["message"]["content"] == TEXT_CALL and choice["message"]["reasoning_content"] == \
        "I should call the tool."
    [warning] = r["x_dsv4_warnings"]
    assert warning["type"] == "tool_call_salvaged" and warning["id"] == call["id"] and "<tool_call" in warning["text"]


@pytest.mark.parametrize("app, body", [({}, {}), ({"salvage_tool_calls": True}, {"x_dsv4_salvage": False})])
def test_off_by_default_and_per_request(real_tokenizer, app, body):
    status, r = post(ScriptedBackend(real_tokenizer, SCRIPT), body, **app)
    assert status == 200 and r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["message"]["tool_calls"] is None and "x_dsv4_warnings" not in r


@pytest.mark.parametrize("content", [
    f"Example:\n```\n{TEXT_CALL}\n```", TEXT_CALL.replace("get_weather", "get_stock_price"),
    'You would write get_weather({"city": "Paris"}) for that.'])
def test_look_alikes_stay_text(real_tokenizer, content):
    status, r = post(ScriptedBackend(real_tokenizer, "r</think>" + content), {"x_dsv4_salvage": True})
    assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["message"]["content"] == content
    assert r["choices"][0]["message"]["tool_calls"] is None


def test_not_with_tool_choice_none_nor_a_cut_reply(real_tokenizer):
    _, r = post(ScriptedBackend(real_tokenizer, SCRIPT), {"x_dsv4_salvage": True, "tool_choice": "none"})
    assert r["choices"][0]["message"]["tool_calls"] is None
    n = len(real_tokenizer.encode(SCRIPT, add_special_tokens=False).ids)  # ends right after the text call
    _, r = post(ScriptedBackend(real_tokenizer, SCRIPT), {"x_dsv4_salvage": True, "max_tokens": n})
    assert r["choices"][0]["finish_reason"] == "length" and r["choices"][0]["message"]["tool_calls"] is None


def test_a_refused_call_is_reported(real_tokenizer):
    script = 'r</think><tool_call name="get_weather">{"days": 2}</tool_call>'
    _, r = post(ScriptedBackend(real_tokenizer, script), {"x_dsv4_salvage": True})
    assert r["choices"][0]["finish_reason"] == "stop"
    [w] = r["x_dsv4_warnings"]
    assert w["type"] == "tool_call_not_salvaged" and "city" in w["message"]


def test_a_bad_flag_is_a_400_naming_it(real_tokenizer):
    status, r = post(ScriptedBackend(real_tokenizer, SCRIPT), {"x_dsv4_salvage": "yes"})
    assert status == 400 and r["error"]["param"] == "x_dsv4_salvage"


def test_streamed_the_call_follows_the_text_and_folds_to_the_whole_reply(real_tokenizer):
    _, whole = post(ScriptedBackend(real_tokenizer, SCRIPT), {"x_dsv4_salvage": True})
    _, events = post(ScriptedBackend(real_tokenizer, SCRIPT), {"x_dsv4_salvage": True, "stream": True})
    chunks = [e for e in events if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    calls = [tc for d in deltas for tc in d.get("tool_calls") or ()]
    assert content == TEXT_CALL and len(calls) == 1 and calls[0]["index"] == 0
    at = [i for i, d in enumerate(deltas) if d.get("tool_calls")][0]
    assert at > max(i for i, d in enumerate(deltas) if d.get("content"))  # after the text that carried it
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [w["type"] for w in chunks[-1]["x_dsv4_warnings"]] == ["tool_call_salvaged"]
    want = whole["choices"][0]["message"]["tool_calls"][0]
    assert (calls[0]["function"]["name"], json.loads(calls[0]["function"]["arguments"])) == \
        (want["function"]["name"], json.loads(want["function"]["arguments"]))


def test_the_openai_client_reads_the_salvaged_call(real_tokenizer):
    async def main():
        client = openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", max_retries=0,
                                    http_client=client_for(ScriptedBackend(real_tokenizer, SCRIPT),
                                                           salvage_tool_calls=True))
        return await client.chat.completions.create(model="dsv4-test", messages=USER, tools=TOOLS)
    r = asyncio.run(main())
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.tool_calls[0].function.name == \
        "get_weather"


def anthropic_client(backend) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=create_app(backend, salvage_tool_calls=True))
    return anthropic.AsyncAnthropic(base_url="http://dsv4", api_key="none", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport, base_url="http://dsv4"))


ANTHROPIC_TOOLS = [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}]


def test_messages_whole_and_streamed(real_tokenizer):
    async def main():
        body = {"model": "dsv4-test", "max_tokens": 200, "messages": USER, "tools": ANTHROPIC_TOOLS}
        whole = await anthropic_client(ScriptedBackend(real_tokenizer, SCRIPT)).messages.create(**body)
        async with anthropic_client(ScriptedBackend(real_tokenizer, SCRIPT)).messages.stream(**body) as s:
            async for _ in s:
                pass
            return whole, await s.get_final_message()
    for m in asyncio.run(main()):
        assert [b.type for b in m.content] == ["thinking", "text", "tool_use"] and m.stop_reason == "tool_use"
        assert m.content[1].text == TEXT_CALL and m.content[2].name == "get_weather"
        assert m.content[2].input == {"city": "Paris", "days": 2}


def test_messages_per_request_switch_and_warnings(real_tokenizer):
    async def main(flag):
        async with client_for(ScriptedBackend(real_tokenizer, SCRIPT)) as http:
            r = await http.post("/v1/messages", json={"model": "dsv4-test", "max_tokens": 200, "messages": USER,
                                                      "tools": ANTHROPIC_TOOLS, "x_dsv4_salvage": flag})
            return r.status_code, r.json()
    status, on = asyncio.run(main(True))
    assert status == 200 and on["stop_reason"] == "tool_use" and on["x_dsv4_warnings"][0]["tool"] == "get_weather"
    status, off = asyncio.run(main(False))
    assert off["stop_reason"] == "end_turn" and "x_dsv4_warnings" not in off
    status, bad = asyncio.run(main("yes"))
    assert status == 400 and "x_dsv4_salvage" in bad["error"]["message"]

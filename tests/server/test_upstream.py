"""`dsv4 serve --upstream`: the server in front of raw-completions endpoints. A scripted fake upstream (an ASGI app
on a real socket) gives chosen raw texts with reasoning and DSML tool calls, error statuses, a stall and a dropped
stream, so the parsing, stop-reason / usage / error mapping, cancellation and spreading are checked exactly; a real
second `dsv4 serve` on the tiny checkpoint is the upstream of the end-to-end test with the official clients."""

import asyncio
import json
import threading

import anthropic
import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from dsv4.encoding.tokens import EOS, THINK_END
from dsv4.server import create_app
from dsv4.server.background import serving
from dsv4.server.upstream import UpstreamBackend, UpstreamConfig
from dsv4.server.upstream_pool import AFFINITY_BLOCK

from .conftest import sse_events

DSML = "｜DSML｜"
CALL = (f"\n\n<{DSML}tool_calls>\n<{DSML}invoke name=\"get_weather\">\n"
        f"<{DSML}parameter name=\"city\" string=\"true\">Paris</{DSML}parameter>\n</{DSML}invoke>\n</{DSML}tool_calls>")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
THINK = "The user wants the weather; I call the tool." + THINK_END
TIMEOUT = 30  # every client call is bounded: a hang fails the test instead of stalling the suite


class FakeUpstream:
    """A raw-completions server: each request takes the next `script` entry, a dict of
    text (streamed in `pieces` chunks), finish ("stop"/"length"), finish_text (sent with the finish), stop_reason,
    status (an error status instead), stall (seconds before the first chunk), drop (close the stream after this many
    chunks, no finish), or hold (an asyncio.Event-like threading.Event waited on before replying). Records each
    request's body, and whether its stream was closed before it finished (`cancelled`)."""

    def __init__(self, name: str = "fake", script: list[dict] | None = None, max_model_len: int = 4096):
        self.name, self.script, self.bodies, self.cancelled = name, list(script or []), [], 0
        self.app = FastAPI()
        self.app.get("/v1/models")(lambda: {"object": "list", "data": [
            {"id": "v4-up", "object": "model", "max_model_len": max_model_len}]})
        self.app.post("/v1/completions")(self.completions)

    async def completions(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        entry = self.script.pop(0) if self.script else {"text": "ok"}
        if "status" in entry:
            return JSONResponse({"error": {"message": entry.get("message", "scripted failure")}},
                                status_code=entry["status"])
        return StreamingResponse(self.events(entry, body), media_type="text/event-stream")

    async def events(self, entry: dict, body: dict):
        if "stall" in entry:
            await asyncio.sleep(entry["stall"])
        if "hold" in entry:
            await asyncio.to_thread(entry["hold"].wait, TIMEOUT)
        text, pieces = entry.get("text", ""), entry.get("pieces", 4)
        size = max(1, -(-len(text) // pieces))
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        try:
            for i, chunk in enumerate(chunks):
                if i == entry.get("drop"):
                    return  # the connection ends without a finish reason or [DONE]
                choice = {"index": 0, "text": chunk, "finish_reason": None,
                          "logprobs": entry["logprobs"][i] if "logprobs" in entry else None}
                yield f"data: {json.dumps({'object': 'text_completion', 'choices': [choice]})}\n\n"
                await asyncio.sleep(entry.get("delay", 0))
            finish = {"index": 0, "text": entry.get("finish_text", ""), "finish_reason": entry.get("finish", "stop"),
                      "stop_reason": entry.get("stop_reason")}
            yield f"data: {json.dumps({'choices': [finish]})}\n\n"
            usage = entry.get("usage", {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18})
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def front(urls: list[str], tok, **config) -> UpstreamBackend:
    return UpstreamBackend(UpstreamConfig(urls, **config), tok, "dsv4-front")


def chat(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Weather in Paris?"}],
                                                   **body})


@pytest.fixture
def fake(real_tokenizer):
    """(fake upstream, a client of the dsv4 server in front of it)."""
    up = FakeUpstream()
    with serving(up.app) as up_url:
        app = create_app(front([up_url], real_tokenizer, timeout_s=2.0))
        with serving(app) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            yield up, http


def test_a_whole_reply_is_parsed_from_the_upstreams_raw_text(fake):
    up, http = fake
    up.script = [{"text": THINK + "Checking." + CALL, "usage": {"prompt_tokens": 9, "completion_tokens": 23}}]
    body = chat(http, tools=TOOLS, thinking={"type": "enabled"}).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == THINK[:-len(THINK_END)] and message["content"] == "Checking."
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["completion_tokens"] == 23  # the upstream's count
    sent = up.bodies[0]
    assert sent["skip_special_tokens"] is False and sent["spaces_between_special_tokens"] is False
    assert sent["add_special_tokens"] is False and sent["stream_options"] == {"include_usage": True}
    assert sent["prompt"].startswith("<｜begin▁of▁sentence｜>") and sent["prompt"].endswith("<think>")
    assert sent["model"] == "v4-up" and body["model"] == "dsv4-front"


def test_a_streamed_reply_gives_reasoning_content_and_tool_call_deltas(fake):
    up, http = fake
    up.script = [{"text": THINK + CALL, "pieces": 9}]
    r = chat(http, tools=TOOLS, thinking={"type": "enabled"}, stream=True, stream_options={"include_usage": True})
    events = sse_events(r.text)
    deltas = [c["choices"][0]["delta"] for c in events[:-1] if c["choices"]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    args = "".join(tc["function"].get("arguments", "") for d in deltas for tc in d.get("tool_calls", []))
    assert reasoning == THINK[:-len(THINK_END)] and json.loads(args) == {"city": "Paris"}
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-2]["usage"]["completion_tokens"] == 11 and events[-1] == "[DONE]"


def test_messages_over_the_upstream(fake):
    up, http = fake
    up.script = [{"text": THINK + CALL}, {"text": "Sunny" + EOS, "finish": "stop"}]
    body = {"model": "dsv4-front", "max_tokens": 200, "tools": [{"name": "get_weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}], "thinking": {"type": "enabled"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    reply = http.post("/v1/messages", json=body).json()
    assert [b["type"] for b in reply["content"]] == ["thinking", "tool_use"]
    assert reply["content"][1]["input"] == {"city": "Paris"} and reply["stop_reason"] == "tool_use"
    streamed = http.post("/v1/messages", json={**body, "stream": True, "thinking": {"type": "disabled"}}).text
    assert "event: message_stop" in streamed and '"text_delta", "text": "Sunny"' in streamed.replace("\n", "")
    assert "<｜end▁of▁sentence｜>" not in streamed  # an upstream that writes its EOS: cut from the text


def test_stop_reasons_map(fake):
    up, http = fake
    up.script = [{"text": "cut sho", "finish": "length"}, {"text": "one", "finish": "stop", "stop_reason": "END"}]
    first = chat(http, max_tokens=3).json()
    assert first["choices"][0]["finish_reason"] == "length"
    body = {"model": "dsv4-front", "max_tokens": 50, "stop_sequences": ["END"],
            "messages": [{"role": "user", "content": "count"}]}
    reply = http.post("/v1/messages", json=body).json()
    assert reply["stop_reason"] == "stop_sequence" and reply["stop_sequence"] == "END"
    assert up.bodies[1]["stop"] == ["END"] and up.bodies[0]["max_tokens"] == 3


def test_a_stop_string_or_eos_the_upstream_writes_ends_the_stream_and_is_never_sent(fake):
    # an upstream that ignores `stop` (or writes EOS as text): the streamed deltas never show the stop string or
    # any part of it, what follows is dropped, and the upstream's stream is closed there (an abort upstream)
    up, http = fake
    up.script = [{"text": "alpha beta END gamma delta", "pieces": 9, "delay": 0.05},
                 {"text": f"all done{EOS}", "pieces": 5}, {"text": "abc", "finish_text": "final"}]
    r = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 50, "stop": ["END"], "stream": True})
    events = [e for e in sse_events(r.text) if e != "[DONE]" and e.get("choices")]
    assert "".join(e["choices"][0]["text"] for e in events) == "alpha beta "
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    reply = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 50, "stream": True})
    assert "".join(e["choices"][0]["text"] for e in sse_events(reply.text)
                   if e != "[DONE]" and e.get("choices")) == "all done"
    reply = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 50}).json()  # text with the finish
    assert reply["choices"][0]["text"] == "abcfinal"
    for _ in range(100):  # the first stream was closed before its finish
        if up.cancelled:
            break
        threading.Event().wait(0.02)
    assert up.cancelled >= 1


@pytest.mark.parametrize("status,want", [(500, 502), (429, 429), (400, 400)])
def test_an_upstream_error_status_becomes_an_api_error(fake, status, want):
    up, http = fake
    up.script = [{"status": status, "message": "scripted failure"}] * 2
    r = chat(http)
    assert r.status_code == want and "scripted failure" in r.json()["error"]["message"]
    r = chat(http, stream=True)
    events = sse_events(r.text)
    assert "scripted failure" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    health = http.get("/health").json()  # the upstream answers /v1/models: up, with its errors counted
    assert health["status"] == "ok" and health["upstreams"][0]["errors"] == 2
    assert "scripted failure" in health["upstreams"][0]["last_error"]


def test_a_stalled_upstream_times_out_and_a_dropped_stream_fails_the_stream(fake):
    up, http = fake
    up.script = [{"stall": 5}, {"text": "a long answer that stops", "pieces": 6, "drop": 2}]
    r = chat(http)
    assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
    events = sse_events(chat(http, stream=True).text)
    assert "dropped" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    text = http.get("/metrics").text
    assert 'dsv4_upstream_errors_total{url="' in text and text.count("dsv4_upstream_errors_total{") == 1
    errors = next(line for line in text.splitlines() if line.startswith("dsv4_upstream_errors_total{"))
    assert errors.endswith(" 2.0")


def test_a_refused_connection_is_an_error_not_a_hang(real_tokenizer):
    up = FakeUpstream()
    with serving(up.app) as up_url:
        backend = front([up_url], real_tokenizer, timeout_s=2.0)
    # the upstream is gone now: its port refuses connections
    with serving(create_app(backend)) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        r = chat(http)
        assert r.status_code == 502 and "ConnectError" in r.json()["error"]["message"]
        assert http.get("/health").status_code == 503


def test_a_client_disconnect_cancels_the_upstream_request(fake):
    up, http = fake
    up.script = [{"text": "x" * 400, "pieces": 400, "delay": 0.05}]
    with http.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
        for line in r.iter_lines():
            if '_content": "x' in line:
                break  # the client goes away mid-stream
    for _ in range(100):
        if up.cancelled:
            break
        threading.Event().wait(0.05)
    assert up.cancelled == 1


def test_requests_spread_by_outstanding_and_a_conversation_stays_on_its_upstream(real_tokenizer):
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with serving(a.app) as url_a, serving(b.app) as url_b:
        backend = front([url_a, url_b], real_tokenizer)
        system = {"role": "system", "content": "You are a careful assistant. " * 40}  # > AFFINITY_BLOCK tokens

        async def main():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(backend)),
                                         base_url="http://dsv4", timeout=TIMEOUT) as http:
                # two held requests at once: one on each upstream
                hold = threading.Event()
                a.script, b.script = [{"text": "one", "hold": hold}], [{"text": "two", "hold": hold}]
                first = [{"role": "user", "content": "first conversation"}]
                second = [{"role": "user", "content": "another conversation, from its own first words"}]
                tasks = []
                for i, m in enumerate((second, [system, *first])):
                    tasks.append(asyncio.ensure_future(http.post("/v1/chat/completions", json={"messages": m})))
                    while len(a.bodies) + len(b.bodies) <= i:
                        await asyncio.sleep(0.01)
                assert [u.outstanding for u in backend.upstreams] == [1, 1]
                assert "first conversation" in b.bodies[0]["prompt"]  # a was busy
                hold.set()
                await asyncio.gather(*tasks)
                holder, other = b, a
                # the first conversation's next turn goes where its prefix is cached, though both are idle and
                # the other upstream has served fewer requests of the same prompt
                turn2 = [system, *first, {"role": "assistant", "content": "one"},
                         {"role": "user", "content": "and then?"}]
                other.script, holder.script = [], [{"text": "three"}]
                n = len(holder.bodies)
                r = await http.post("/v1/chat/completions", json={"messages": turn2})
                assert r.json()["choices"][0]["message"]["reasoning_content"] == "three" and len(holder.bodies) == n + 1

        asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert len(backend.affinity.keys(list(range(3 * AFFINITY_BLOCK)))) == 3


def test_a_forced_tool_call_in_thinking_mode_runs_in_two_phases(fake):
    up, http = fake
    opener = f"<{DSML}parameter name=\"city\" string=\"true\">"  # the grammar fixes it: the lead writes it
    args = f"Rome</{DSML}parameter>\n</{DSML}invoke>\n</{DSML}tool_calls>"
    up.script = [{"text": "I must call it.", "finish": "stop", "stop_reason": THINK_END}, {"text": args}]
    body = chat(http, tools=TOOLS, thinking={"type": "enabled"}, max_tokens=400,
                tool_choice={"type": "function", "function": {"name": "get_weather"}}).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "I must call it."
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}
    first, second = up.bodies
    assert THINK_END in first["stop"]
    assert second["prompt"] == first["prompt"] + "I must call it." + THINK_END + \
        f"\n\n<{DSML}tool_calls>\n<{DSML}invoke name=\"get_weather\">\n" + opener


@pytest.mark.slow  # two engines load and generate: about a minute on 2 busy cores
def test_the_official_clients_through_a_dsv4_upstream_match_the_in_process_engine(tiny_dir):
    """A second `dsv4 serve` (its /v1/completions) is the upstream: greedy replies, whole and streamed, equal
    the in-process engine's for the same request; killing the upstream mid-stream gives the client an error and
    leaves the front server up."""
    from dsv4.engine import Engine
    from dsv4.server import EngineBackend
    from dsv4.server.background import serve_process
    from dsv4.server.upstream import upstream_tokenizer

    request = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS, "temperature": 0,
               "max_tokens": 24}
    local = create_app(EngineBackend(Engine.from_pretrained(str(tiny_dir)), "tiny"))
    with serving(local) as url:
        want = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=TIMEOUT).chat.completions.create(
            model="tiny", **request)
    with serve_process(["--model", str(tiny_dir), "--served-model-name", "tiny"]) as (up_url, process):
        backend = UpstreamBackend(UpstreamConfig([up_url]), upstream_tokenizer(str(tiny_dir)))
        with serving(create_app(backend)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=TIMEOUT)
            got = client.chat.completions.create(model="tiny", **request)
            assert got.choices[0].message.content == want.choices[0].message.content
            assert got.choices[0].message.model_extra.get("reasoning_content") == \
                want.choices[0].message.model_extra.get("reasoning_content")
            assert got.choices[0].finish_reason == want.choices[0].finish_reason
            assert got.usage.completion_tokens == want.usage.completion_tokens
            assert got.usage.prompt_tokens == want.usage.prompt_tokens
            streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="tiny", stream=True, **request) if c.choices)
            assert streamed == (want.choices[0].message.content or "")
            messages = anthropic.Anthropic(base_url=url, api_key="x", timeout=TIMEOUT).messages.create(
                model="tiny", max_tokens=24, messages=[{"role": "user", "content": "Hello"}])
            assert messages.usage.output_tokens > 0
            # the upstream dies while a long reply streams
            stream = client.chat.completions.create(model="tiny", stream=True, **{**request, "max_tokens": 2000})
            with pytest.raises(openai.APIError):
                for i, _ in enumerate(stream):
                    if i == 2:
                        process.kill()
            assert httpx.get(f"{url}/health", timeout=TIMEOUT).status_code == 503  # its only upstream is down
            assert httpx.get(f"{url}/v1/models", timeout=TIMEOUT).status_code == 200  # the front is up


def test_logprobs_are_read_back_to_token_ids(fake, real_tokenizer):
    """vLLM's "token_id:N" (return_tokens_as_token_ids) as is, another upstream's token text through the vocabulary."""
    up, http = fake
    hello, world = real_tokenizer.encode("Hello world", add_special_tokens=False).ids
    up.script = [{"text": "Hello world", "pieces": 2, "logprobs": [
        {"tokens": [f"token_id:{hello}"], "token_logprobs": [-0.5], "top_logprobs": [{f"token_id:{hello}": -0.5}]},
        {"tokens": [" world"], "token_logprobs": [-1.25], "top_logprobs": [{" world": -1.25, "Hello": -3.0}]}]}]
    body = chat(http, logprobs=True, top_logprobs=2, thinking={"type": "disabled"}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [(c["token"], c["logprob"]) for c in content] == [("Hello", -0.5), (" world", -1.25)]
    assert [t["token"] for t in content[1]["top_logprobs"]] == [" world", "Hello"]
    assert up.bodies[0]["logprobs"] == 2 and up.bodies[0]["return_tokens_as_token_ids"] is True
    assert body["usage"]["completion_tokens"] == 11  # the upstream's count, not the two logprob entries
    del world


def test_responses_api_over_the_upstream(fake):
    up, http = fake
    up.script = [{"text": THINK + CALL}]
    body = http.post("/v1/responses", json={"input": "Weather in Paris?", "tools": [
        {"type": "function", **TOOLS[0]["function"]}]}).json()
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert calls and json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_serve_command_builds_an_upstream_app(real_tokenizer, tmp_path, monkeypatch):
    from dsv4.cli import build_parser
    from dsv4.cli.serve_cmds import build_app

    up = FakeUpstream(max_model_len=1234)
    key = tmp_path / "key"
    key.write_text("sekret\n")
    with serving(up.app) as up_url:
        args = build_parser().parse_args(["serve", "--upstream", f"{up_url}/v1", "--upstream-key-file", str(key)])
        app = build_app(args)
        backend = app.state.backend
        assert backend.model_name == "v4-up" and backend.max_model_len == 1234 and backend.upstreams[0].url == up_url
        assert backend.headers == {"authorization": "Bearer sekret"}
    args = build_parser().parse_args(["serve", "--upstream", "http://127.0.0.1:9"])
    with pytest.raises(SystemExit, match="no upstream answered /v1/models"):
        build_app(args)

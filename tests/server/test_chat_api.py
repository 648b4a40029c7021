"""The chat-completions API over scripted completions, read by the official `openai` client: reasoning, content
and DSML tool calls as DeepSeek's recipe parses them, the same message streamed or not, usage, logprobs, the
request's sampling fields, and errors that name what is wrong."""

import asyncio
import json

import httpx
import openai
import pytest

from dsv4.encoding import FORCED_TOOL_CALLS, encode_request, parse_completion
from tests.encoding.test_parse_strategies import recipe_parse, render_calls

from .conftest import ScriptedBackend, client_for, sse_events

USER = [{"role": "user", "content": "Weather in Paris and Rome?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"}},
                                               "required": ["city"]}}}]
CALLS = [("get_weather", {"city": "Paris", "days": 2}), ("get_weather", {"city": "Rome"})]
SCRIPTS = {
    "answer": "The user greets me.</think>Hello! How can I help?",
    "tool calls": "Two cities: two calls.</think>Checking both." + render_calls(CALLS),
    "unicode": "思考一下 🙂</think>答案是 4 — naïve café.",
}


def run(coro):
    return asyncio.run(coro)


def openai_client(backend, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="none", http_client=client_for(backend, **kw),
                              max_retries=0)


async def complete(backend, stream: bool, **body):
    """-> (reasoning, content, [(name, arguments)], finish_reason, usage) read by the openai client."""
    client = openai_client(backend)
    body = {"model": backend.model_name, "messages": USER, "tools": TOOLS, **body}
    if "thinking" in body:  # DeepSeek's field, not in the openai client's signature
        body["extra_body"] = {"thinking": body.pop("thinking")}
    if not stream:
        r = await client.chat.completions.create(**body)
        m = r.choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in m.tool_calls or []]
        return (getattr(m, "reasoning_content", None) or "", m.content or "", calls, r.choices[0].finish_reason,
                r.usage)
    reasoning, content, calls, finish, usage = [], [], {}, None, None
    async for chunk in await client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                           **body):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            d = choice.delta
            reasoning.append(getattr(d, "reasoning_content", None) or "")
            content.append(d.content or "")
            for tc in d.tool_calls or []:
                name, args = calls.setdefault(tc.index, ([], []))
                name.append(tc.function.name or "")
                args.append(tc.function.arguments or "")
            finish = choice.finish_reason or finish
    return ("".join(reasoning), "".join(content), [("".join(n), "".join(a)) for n, a in calls.values()], finish,
            usage)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_completions_parse_as_deepseeks_recipe(real_tokenizer, name, stream):
    backend = ScriptedBackend(real_tokenizer, SCRIPTS[name])
    reasoning, content, calls, finish, usage = run(complete(backend, stream))
    want_reasoning, want_content, want_calls = recipe_parse(SCRIPTS[name])
    assert (reasoning, content) == (want_reasoning, want_content)
    assert [(n, json.loads(a)) for n, a in calls] == [(n, json.loads(a)) for n, a in want_calls]
    assert finish == ("tool_calls" if want_calls else "stop")
    prompt_ids = backend.encode(encode_request({"messages": USER, "tools": TOOLS}))
    assert backend.calls[0][0] == prompt_ids
    completion = len(backend.encode(SCRIPTS[name])) + 1  # + EOS
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == \
        (len(prompt_ids), completion, len(prompt_ids) + completion)


def test_streamed_chunks_arrive_as_the_text_forms(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPTS["tool calls"])

    async def main():
        async with client_for(backend) as http:
            r = await http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "stream": True})
            return r.headers["content-type"], sse_events(r.text)

    kind, events = run(main())
    assert kind.startswith("text/event-stream") and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert sum("reasoning_content" in d for d in deltas) > 3  # token by token, not at the end
    starts = [tc for d in deltas for tc in d.get("tool_calls", []) if "id" in tc]
    assert [(tc["index"], tc["function"]["name"]) for tc in starts] == [(0, "get_weather"), (1, "get_weather")]
    assert all(tc["id"].startswith("call_") for tc in starts) and starts[0]["id"] != starts[1]["id"]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


def test_malformed_dsml_keeps_its_text(real_tokenizer):
    # the model forgot the block's opening tag: the call is recovered, or its text kept, never an error
    script = 'Done thinking.</think>Let me check.\n\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter ' \
             'name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>'
    want = parse_completion(script, strict=False, tools=TOOLS)
    assert want.warnings  # premise: the tolerant parser had to recover
    for stream in (False, True):
        reasoning, content, calls, finish, _ = run(complete(ScriptedBackend(real_tokenizer, script), stream))
        assert (reasoning, content) == (want.reasoning_content, want.content)
        assert calls == [(c.name, c.arguments) for c in want.tool_calls]
        assert finish == ("tool_calls" if want.tool_calls else "stop")


def test_forced_tool_choice_reads_the_call_the_prompt_opened(real_tokenizer):
    continuation = '<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Oslo' \
                   '</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>'
    backend = ScriptedBackend(real_tokenizer, continuation)
    choice = {"type": "function", "function": {"name": "get_weather"}}
    for stream in (False, True):
        reasoning, content, calls, finish, _ = run(complete(backend, stream, tool_choice=choice,
                                                            thinking={"type": "disabled"}))
        assert (reasoning, content, finish) == ("", "", "tool_calls")
        assert [(n, json.loads(a)) for n, a in calls] == [("get_weather", {"city": "Oslo"})]
    prompt = encode_request({"messages": USER, "tools": TOOLS, "tool_choice": choice, "thinking": {"type": "disabled"}})
    assert prompt.endswith(FORCED_TOOL_CALLS) and backend.calls[0][0] == backend.encode(prompt)


def test_non_thinking_requests_have_no_reasoning(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "Plain answer.")
    for body in ({"extra_body": {"thinking": {"type": "disabled"}}}, {"reasoning_effort": "none"}):
        r = run(openai_client(backend).chat.completions.create(model=backend.model_name, messages=USER, **body))
        assert r.choices[0].message.content == "Plain answer."
        assert getattr(r.choices[0].message, "reasoning_content", None) is None


def test_sampling_fields_reach_the_engine(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "x</think>y")
    client = openai_client(backend)
    run(client.chat.completions.create(model=backend.model_name, messages=USER, temperature=0.3, top_p=0.9, seed=7,
                                       stop=["END", "STOP"], max_completion_tokens=50,
                                       extra_body={"top_k": 20, "ignore_eos": True}))
    run(client.chat.completions.create(model=backend.model_name, messages=USER))
    first, default = backend.calls[0][1], backend.calls[1][1]
    assert (first.temperature, first.top_p, first.top_k, first.seed, first.stop, first.max_tokens, first.ignore_eos) \
        == (0.3, 0.9, 20, 7, ("END", "STOP"), 50, True)
    assert (default.temperature, default.top_p, default.top_k, default.stop, default.logprobs, default.ignore_eos) \
        == (1.0, 1.0, 0, (), None, False)
    assert default.max_tokens == backend.max_model_len - len(backend.calls[1][0])  # all the room left (< 32768)


def test_the_checkpoints_sampling_defaults_fill_what_a_request_leaves_out(real_tokenizer):
    # a checkpoint's generation_config.json (the built-in model ships do_sample false: greedy) sets the defaults;
    # a field the request names still wins, and top_k 0 there means all tokens, not the default's 40
    backend = ScriptedBackend(real_tokenizer, ["a", "b", "c"])
    backend.sampling_defaults = {"temperature": 0.0, "top_k": 40}
    client = openai_client(backend)
    run(client.chat.completions.create(model=backend.model_name, messages=USER))
    run(client.chat.completions.create(model=backend.model_name, messages=USER, temperature=0.7, top_p=0.5))
    run(client.chat.completions.create(model=backend.model_name, messages=USER, extra_body={"top_k": 0}))
    (_, default), (_, named), (_, all_tokens) = backend.calls
    assert (default.temperature, default.top_p, default.top_k) == (0.0, 1.0, 40)
    assert (named.temperature, named.top_p, named.top_k) == (0.7, 0.5, 40)
    assert (all_tokens.temperature, all_tokens.top_k) == (0.0, 0)


def test_length_limit(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPTS["answer"])
    for stream in (False, True):
        reasoning, content, _, finish, usage = run(complete(backend, stream, max_tokens=3))
        assert finish == "length" and usage.completion_tokens == 3
        assert reasoning == real_tokenizer.decode(backend.encode(SCRIPTS["answer"])[:3]) and content == ""


def test_logprobs_whole_and_streamed(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "ok</think>ça")
    ids = backend.encode("ok</think>ça") + [1]
    r = run(openai_client(backend).chat.completions.create(model=backend.model_name, messages=USER, logprobs=True,
                                                           top_logprobs=2))
    content = r.choices[0].logprobs.content
    assert [bytes(e.bytes) for e in content] == [backend.token_bytes(i) for i in ids]
    assert b"".join(bytes(e.bytes) for e in content[:-1]).decode() == "ok</think>ça"
    assert content[0].logprob == -0.25 and [t.logprob for t in content[0].top_logprobs] == [-0.25, -2.0]

    async def streamed():
        async with client_for(backend) as http:
            r = await http.post("/v1/chat/completions", json={"messages": USER, "stream": True, "logprobs": True})
            return sse_events(r.text)

    chunks = [c for c in run(streamed())[:-1] if c["choices"] and c["choices"][0].get("logprobs")]
    streamed_ids = [e for c in chunks for e in c["choices"][0]["logprobs"]["content"]]
    assert [bytes(e["bytes"]) for e in streamed_ids] == [backend.token_bytes(i) for i in ids]
    assert all(e["top_logprobs"] == [] for e in streamed_ids)  # logprobs without top_logprobs: none listed


def test_models_and_health(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer)
    async def models():
        return [m async for m in openai_client(backend).models.list()]

    assert [m.id for m in run(models())] == ["dsv4-test"]

    async def health():
        async with client_for(backend) as http:
            return (await http.get("/health")).json()

    assert run(health()) == {"status": "ok"}


async def post(backend, body, raw: bytes | None = None) -> httpx.Response:
    async with client_for(backend) as http:
        if raw is not None:
            return await http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        return await http.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize("body, status, names", [
    ({}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]"),
    ({"messages": USER, "n": 2}, 400, "n=2"),
    ({"messages": USER, "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ({"messages": USER, "temperature": 3}, 400, "temperature"),
    ({"messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": USER, "stop": [""]}, 400, "stop"),
    ({"messages": USER, "top_logprobs": 2}, 400, "top_logprobs"),
    ({"messages": USER, "model": "gpt-4o"}, 404, "gpt-4o"),
    ({"messages": USER, "tool_choice": {"type": "function", "function": {"name": "nope"}},
      "tools": TOOLS, "thinking": {"type": "disabled"}}, 400, "nope"),
    ({"messages": USER, "max_tokens": 5000}, 400, "maximum context length is 4096"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, 400, "maximum context length"),
])
def test_bad_requests_get_an_openai_error_naming_the_problem(real_tokenizer, body, status, names):
    backend = ScriptedBackend(real_tokenizer, "x")
    r = run(post(backend, body))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert names in error["message"] + str(error["param"]) and error["type"] == "invalid_request_error"
    assert not backend.calls  # nothing reached the engine


def test_invalid_json_and_unknown_routes(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer)
    r = run(post(backend, None, raw=b'{"messages": ['))
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]

    async def missing():
        async with client_for(backend) as http:
            return await http.get("/v1/nothing")

    r = run(missing())
    assert r.status_code == 404 and r.json()["error"]["message"] == "Not Found"


def test_a_failing_generation_is_a_server_error(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, SCRIPTS["answer"], fail_after=3)
    r = run(post(backend, {"messages": USER}))
    assert r.status_code == 500 and "device lost" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "server_error"
    events = sse_events(run(post(backend, {"messages": USER, "stream": True})).text)
    assert events[-1] == "[DONE]" and "device lost" in events[-2]["error"]["message"]
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in events[:-2] if c.get("choices"))
    assert streamed == real_tokenizer.decode(backend.encode(SCRIPTS["answer"])[:3])  # what came before the failure


def test_an_api_key_guards_the_api_but_not_health(real_tokenizer):
    backend = ScriptedBackend(real_tokenizer, "x")

    async def main():
        app = client_for(backend, api_key="s3cret")
        async with app as http:
            return [await http.post("/v1/chat/completions", json={"messages": USER}, headers=h)
                    for h in ({}, {"authorization": "Bearer nope"}, {"authorization": "Bearer s3cret"})] + \
                [await http.get("/health")]

    missing, wrong, right, health = run(main())
    assert missing.status_code == wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200 and health.status_code == 200 and len(backend.calls) == 1
    client = openai.AsyncOpenAI(base_url="http://dsv4/v1", api_key="s3cret", max_retries=0,
                                http_client=client_for(backend, api_key="s3cret"))
    reply = run(client.chat.completions.create(model=backend.model_name, messages=USER))
    assert reply.choices[0].finish_reason == "stop"

"""The server on the engine (tiny checkpoint, real tokenizer), over a real socket: greedy chat equals the engine's
own greedy run parsed, concurrent streams are batched and each equals its request alone, and a client that
disconnects mid-stream gets its KV blocks freed."""

import asyncio
import time

import httpx
import pytest

from dsv4.cli import build_parser
from dsv4.cli.serve_cmds import build_app
from dsv4.encoding import encode_request, parse_completion
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.server import EngineBackend, create_app
from dsv4.server.background import serving

from .conftest import sse_events

MESSAGES = [[{"role": "user", "content": "What is 2 + 2?"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
            [{"role": "user", "content": "Write a haiku about caches."}]]
CHAT = {"thinking": {"type": "disabled"}, "temperature": 0, "max_tokens": 10}


@pytest.fixture(scope="module")
def expected(tiny_model, tokenizer):
    """Each chat's greedy completion from the engine alone, parsed."""
    engine = Engine(tiny_model, tokenizer, EngineConfig(num_blocks=16))
    prompts = [encode_request({"messages": m, **CHAT}) for m in MESSAGES]
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=CHAT["max_tokens"]))
    return [(parse_completion(o.text, thinking_mode="chat", strict=False).content, len(o.token_ids)) for o in outs]


def engine_app(tiny_model, tokenizer, **config):
    engine = Engine(tiny_model, tokenizer, EngineConfig(**{"num_blocks": 16, **config}))
    return engine, create_app(EngineBackend(engine, "tiny"))


def test_greedy_chat_equals_the_engine_run_parsed(tiny_model, tokenizer, expected):
    engine, app = engine_app(tiny_model, tokenizer)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dsv4") as http:
            return [(await http.post("/v1/chat/completions", json={"messages": m, **CHAT})).json() for m in MESSAGES]

    for body, (content, n) in zip(asyncio.run(main()), expected, strict=True):
        assert body["choices"][0]["message"]["content"] == content and body["usage"]["completion_tokens"] == n
        assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["model"] == "tiny"
    assert engine.blocks.num_used == 0 and not engine.seqs


def test_a_raw_completion_equals_the_engine_run(tiny_model, tokenizer):
    engine, app = engine_app(tiny_model, tokenizer)
    prompt = "<｜begin▁of▁sentence｜>The cache"
    want = Engine(tiny_model, tokenizer, EngineConfig(num_blocks=16)).generate(
        [prompt], SamplingParams(temperature=0, max_tokens=12))[0]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dsv4") as http:
            return (await http.post("/v1/completions", json={"prompt": prompt, "temperature": 0,
                                                             "max_tokens": 12})).json()

    body = asyncio.run(main())
    assert body["choices"][0]["text"] == want.text and body["usage"]["completion_tokens"] == len(want.token_ids)
    assert body["usage"]["prompt_tokens"] == len(want.prompt_token_ids)


def test_concurrent_streams_are_batched_and_each_equals_its_request_alone(tiny_model, tokenizer, expected):
    engine, app = engine_app(tiny_model, tokenizer)
    step, running = engine.step, []

    def counting_step():
        running.append(len(engine.scheduler.running))
        return step()

    engine.step = counting_step

    async def stream(http, messages):
        r = await http.post("/v1/chat/completions", json={"messages": messages, "stream": True, **CHAT})
        chunks = [c for c in sse_events(r.text)[:-1] if c["choices"]]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(*(stream(http, m) for m in MESSAGES))

    with serving(app) as url:
        contents = asyncio.run(main(url))
    assert contents == [content for content, _ in expected]
    assert max(running) > 1  # decoded together, not one after another
    assert engine.blocks.num_used == 0 and not engine.seqs


def test_a_client_that_disconnects_mid_stream_frees_its_blocks(tiny_model, tokenizer):
    engine, app = engine_app(tiny_model, tokenizer)
    body = {"messages": MESSAGES[2], "stream": True, "temperature": 0, "max_tokens": 1000}

    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            seen = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")]
            assert len(seen) >= 2 and engine.blocks.num_used > 0
        deadline = time.monotonic() + 60
        while engine.seqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not engine.seqs and engine.blocks.num_used == 0
        generated = engine.runner.num_forward_calls
        time.sleep(0.2)
        assert engine.runner.num_forward_calls == generated  # nothing keeps running for the departed client


def test_serve_command_builds_the_app_on_a_checkpoint(tiny_dir):
    args = build_parser().parse_args(["serve", "--model", str(tiny_dir), "--served-model-name", "v4-tiny",
                                      "--kv-cache-gib", "0.05", "--max-num-seqs", "2"])
    app = build_app(args)

    async def models():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dsv4") as http:
            return (await http.get("/v1/models")).json()

    try:
        card = asyncio.run(models())["data"][0]
        assert app.state.backend.alive  # the engine runs in a process of its own
    finally:
        app.state.backend.close()
    assert card["id"] == "v4-tiny" and 0 < card["max_model_len"] < 1 << 20  # bounded by the 0.05 GiB cache
    assert not app.state.backend.alive


def test_metrics_count_what_the_engine_did(tiny_model, tokenizer, expected):
    engine, app = engine_app(tiny_model, tokenizer)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dsv4") as http:
            for m in MESSAGES[:2]:
                await http.post("/v1/chat/completions", json={"messages": m, **CHAT})
            return await http.get("/metrics")

    r = asyncio.run(main())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in r.text.splitlines()
              if line and not line.startswith("#")}
    stats = engine.stats()
    assert values["dsv4_generation_tokens_total"] == sum(n for _, n in expected[:2]) == stats.generated_tokens
    assert values["dsv4_requests_running"] == 0 and values["dsv4_kv_cache_usage_ratio"] == 0
    assert values["dsv4_kv_cache_blocks"] == 16
    assert sum(v for k, v in values.items() if k.startswith("dsv4_requests_finished_total")) == 2
    assert values["dsv4_time_to_first_token_seconds_count"] == 2 and values["dsv4_request_duration_seconds_count"] == 2
    assert values["dsv4_computed_tokens_total"] == stats.computed_tokens > values["dsv4_generation_tokens_total"]


def test_a_client_that_gives_up_on_a_whole_reply_cancels_it(tiny_model, tokenizer):
    # an agent's client timing out (and retrying) must not leave the first request generating
    engine, app = engine_app(tiny_model, tokenizer)
    body = {"messages": MESSAGES[2], "temperature": 0, "max_tokens": 1000}
    with serving(app) as url, httpx.Client(base_url=url, timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json=body)
        deadline = time.monotonic() + 60
        while engine.seqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not engine.seqs and engine.blocks.num_used == 0
        assert engine.stats().finished == {"abort": 1}

"""Async streaming per request, and the chat -> engine -> parse pipeline on the tiny checkpoint."""

import asyncio

import anyio
import pytest

from dsv4.encoding.message import AssistantMessage
from dsv4.encoding.parse import parse_completion
from dsv4.encoding.render import encode_messages
from dsv4.engine import Engine, EngineConfig, SamplingParams, StepFailed
from dsv4.engine.async_engine import AsyncEngine

from .test_engine import GREEDY, PROMPTS, greedy_reference


def test_async_streams_run_concurrently_and_match_greedy(tiny_model, tokenizer):
    engine = AsyncEngine(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=8)))

    async def collect(prompt):
        return [out async for out in engine.stream(prompt, GREEDY)]

    async def main():
        return await asyncio.gather(*(collect(p) for p in PROMPTS[:3]))

    streams = asyncio.run(main())
    for prompt, deltas in zip(PROMPTS, streams, strict=False):
        assert [len(d.token_ids) for d in deltas] == [1] * GREEDY.max_tokens
        assert sum((d.token_ids for d in deltas), []) == greedy_reference(tiny_model, prompt, GREEDY.max_tokens)
        assert deltas[-1].finished
    assert engine.engine.blocks.num_used == 0 and not engine.engine.seqs


def test_async_consumer_that_leaves_cancels_its_request(tiny_model, tokenizer):
    engine = AsyncEngine(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=8)))

    async def main():
        stream = engine.stream(PROMPTS[1], GREEDY)
        first = await anext(stream)
        assert engine.engine.blocks.num_used > 0
        await stream.aclose()
        return first

    out = asyncio.run(main())
    assert len(out.token_ids) == 1 and not out.finished
    assert engine.engine.blocks.num_used == 0 and not engine.engine.has_unfinished()


def test_a_cancelled_consumer_task_cancels_its_request(tiny_model, tokenizer):
    # as Starlette cancels a disconnected client's handler: an anyio cancel scope, whose cancellation re-raises at
    # every later await (so the stream must close its request without awaiting)
    engine = AsyncEngine(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=8)))
    params = SamplingParams(temperature=0, max_tokens=200)
    got: list = []

    async def consume():
        async for out in engine.stream(PROMPTS[1], params):
            got.append(out)

    async def main():
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            while len(got) < 2:
                await anyio.sleep(0.001)
            group.cancel_scope.cancel()
        for _ in range(2000):  # cancelled at once, or before the next step if one was running
            if not engine.engine.seqs:
                break
            await anyio.sleep(0.005)

    anyio.run(main)
    assert len(got[-1].token_ids) < params.max_tokens
    assert engine.engine.blocks.num_used == 0 and not engine.engine.seqs


def test_chat_engine_parse(tiny_dir):
    # the call sequence `make run` uses: render -> generate (text prompt) -> tolerant parse
    engine = Engine.from_pretrained(tiny_dir)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    prompt = encode_messages(messages, thinking_mode="chat")
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=8))[0]
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False).ids
    assert out.prompt_token_ids == ids and ids[0] == 0  # BOS as the special token, not as text
    assert engine.tokenizer.token_to_id("<｜Assistant｜>") in ids
    message = parse_completion(out.text, thinking_mode="chat", strict=False)
    assert isinstance(message, AssistantMessage)
    if "<｜" not in out.text and "</think>" not in out.text:  # random weights: plain text, no markup
        assert message.content == out.text


def test_a_failing_step_reaches_every_open_stream(tiny_model, tokenizer):
    engine = AsyncEngine(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=8)))

    def broken_step():
        raise RuntimeError("device lost")

    engine.engine.step = broken_step

    async def main():
        return [out async for out in engine.stream(PROMPTS[0], GREEDY)]

    with pytest.raises(RuntimeError, match="device lost"):
        asyncio.run(main())
    assert engine.engine.blocks.num_used == 0  # the request was cancelled on the way out


def test_a_request_whose_step_fails_does_not_take_the_others_down(tiny_model, tokenizer):
    engine = AsyncEngine(Engine(tiny_model, tokenizer, EngineConfig(num_blocks=8, max_num_seqs=1)))
    run = engine.engine.runner.run

    def run_failing_the_first(chunks):  # one request at a time: the first fails at its third step
        if any(c.seq.prompt_ids == PROMPTS[0] and c.seq.num_output >= 2 for c in chunks):
            raise RuntimeError("bad request")
        return run(chunks)

    engine.engine.runner.run = run_failing_the_first

    async def collect(prompt):
        return [out async for out in engine.stream(prompt, GREEDY)]

    async def main():
        first = asyncio.create_task(collect(PROMPTS[0]))
        await asyncio.sleep(0.01)  # it is added first
        return await asyncio.gather(first, collect(PROMPTS[1]), return_exceptions=True)

    failed, other = asyncio.run(main())
    assert isinstance(failed, StepFailed) and "bad request" in str(failed) and failed.request_ids == [0]
    assert other[-1].finished
    assert sum((d.token_ids for d in other), []) == greedy_reference(tiny_model, PROMPTS[1], GREEDY.max_tokens)
    assert engine.engine.blocks.num_used == 0 and not engine.engine.seqs

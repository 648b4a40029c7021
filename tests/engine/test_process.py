"""The engine in its own process: its streams' deltas, summed up, equal the in-process engine's outputs
(tokens, text, logprobs, finish), leaving a stream aborts its request, a refused request fails its stream only,
and a child that dies fails every open stream."""

import asyncio
import os
import signal

import pytest

from dsv4.engine import Engine, EngineConfig, OutputAccumulator, SamplingParams
from dsv4.engine.process import EngineProcess

from .test_engine import PROMPTS

CONFIG = EngineConfig(num_blocks=8, max_num_seqs=4)


@pytest.fixture(scope="module")
def process(tiny_dir):
    p = EngineProcess(str(tiny_dir), CONFIG, threads=1)  # as this process (the same sums, the same argmax)
    yield p
    p.close()


async def collect(p: EngineProcess, prompt, params):
    return [delta async for delta in p.stream(prompt, params)]


def summed(deltas, params):
    out = OutputAccumulator(deltas[0].request_id, [], params.logprobs is not None)
    for d in deltas:
        out.add(d)
    return out.output()


PARAMS = [SamplingParams(temperature=0, max_tokens=12, logprobs=2),
          SamplingParams(temperature=0.8, seed=3, max_tokens=9, stop=("the",)),
          SamplingParams(temperature=0, max_tokens=5)]


def test_streams_equal_the_in_process_engine(process, tiny_dir):
    # one request at a time on both sides: the same batches, so the same sums, bit for bit
    engine, produced = Engine.from_pretrained(tiny_dir, CONFIG), 0
    for prompt, params in zip(PROMPTS, PARAMS, strict=False):
        want = engine.generate([prompt], params)[0]
        deltas = asyncio.run(collect(process, prompt, params))
        last = summed(deltas, params)
        assert (last.token_ids, last.text, last.finish_reason, last.stop_reason) == \
            (want.token_ids, want.text, want.finish_reason, want.stop_reason)
        assert [len(d.token_ids) for d in deltas] == [1] * len(want.token_ids)
        assert (last.logprobs is None) == (want.logprobs is None)
        if want.logprobs is not None:
            assert [(lp.token_id, lp.top) for lp in last.logprobs] == [(lp.token_id, lp.top) for lp in want.logprobs]
        produced += len(last.token_ids)
    assert process.stats.generated_tokens >= produced


def test_concurrent_streams_get_their_own_deltas(process, tokenizer):
    async def main():
        return await asyncio.gather(*(collect(process, p, sp) for p, sp in zip(PROMPTS, PARAMS, strict=False)))

    for deltas, params in zip(asyncio.run(main()), PARAMS, strict=True):
        last = summed(deltas, params)
        assert [len(d.token_ids) for d in deltas] == [1] * len(last.token_ids)
        assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
        assert last.finish_reason in ("stop", "length") and len(last.token_ids) <= params.max_tokens
        if last.finish_reason == "length":
            assert last.text == tokenizer.decode(last.token_ids, skip_special_tokens=False)


def test_leaving_a_stream_aborts_and_a_refused_request_fails_alone(process):
    async def main():
        stream = process.stream(PROMPTS[1], SamplingParams(temperature=0, max_tokens=500))
        await anext(stream)
        await stream.aclose()
        with pytest.raises(RuntimeError, match="KV cache full"):
            await collect(process, list(range(3, 100)), SamplingParams(max_tokens=5000))
        ok = await collect(process, PROMPTS[2], SamplingParams(temperature=0, max_tokens=3))
        for _ in range(200):  # the abort and the idle stats arrive with the next message
            if process.stats.running == 0:
                break
            await asyncio.sleep(0.01)
        return ok

    assert sum(len(d.token_ids) for d in asyncio.run(main())) == 3
    assert process.stats.running == 0 and process.stats.blocks_used == 0
    assert process.stats.finished["abort"] == 1


def test_a_dead_engine_fails_open_streams(tiny_dir):
    p = EngineProcess(str(tiny_dir), CONFIG)
    try:
        async def main():
            stream = p.stream(PROMPTS[1], SamplingParams(temperature=0, max_tokens=1000))
            await anext(stream)
            os.kill(p.process.pid, signal.SIGKILL)
            with pytest.raises(RuntimeError, match="engine process ended"):
                async for _ in stream:
                    pass

        asyncio.run(main())
        assert not p.alive
        with pytest.raises(RuntimeError, match="engine process ended"):
            asyncio.run(collect(p, PROMPTS[0], SamplingParams(max_tokens=2)))
    finally:
        p.close()


def test_stats_say_idle_when_the_last_running_request_is_aborted(process):
    # /metrics reads these stats; they came only with a step, and aborting the last request leaves none to come
    # (dsv4_requests_running stayed at 10 for as long as no new request arrived after ten client timeouts)
    async def main():
        stream = process.stream(PROMPTS[1], SamplingParams(temperature=0, max_tokens=500))
        await anext(stream)
        await stream.aclose()
        for _ in range(500):
            if process.stats.running == 0:
                break
            await asyncio.sleep(0.01)

    aborted = process.stats.finished["abort"]
    asyncio.run(main())
    assert process.stats.running == 0 and process.stats.blocks_used == 0
    assert process.stats.finished["abort"] == aborted + 1

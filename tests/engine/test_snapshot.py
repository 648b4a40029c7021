"""Session snapshots: a request saved mid-generation and resumed in a fresh engine continues exactly as the
uninterrupted run, without re-prefill; the file holds about the plan's bytes for the request."""

import pytest
import torch

from dsv4.cache.plan import KVPlan
from dsv4.engine import Engine, EngineConfig, SamplingParams

from .conftest import Collector

PROMPT = list(range(3, 200))  # crosses a block boundary of 128


def _engine(model, tokenizer, **config) -> Engine:
    return Engine(model, tokenizer, EngineConfig(**{"num_blocks": 6, "max_num_seqs": 2, **config}))


def _run_until(engine: Engine, request_id: int, n_out: int) -> Collector:
    """Steps until the request has n_out tokens; its deltas summed up (a resumed request's first delta carries the
    tokens it had before its snapshot)."""
    steps = Collector(engine)
    while steps.num_output(request_id) < n_out:
        steps.step()
    return steps


@pytest.mark.parametrize("params", [SamplingParams(temperature=0, max_tokens=10),
                                    SamplingParams(temperature=1.0, top_k=50, seed=11, max_tokens=10)])
def test_resumed_continuation_equals_the_uninterrupted_one(tiny_model, tokenizer, tmp_path, params):
    whole = _engine(tiny_model, tokenizer).generate([PROMPT], params)[0]

    first = _engine(tiny_model, tokenizer)
    request = first.add_request(PROMPT, params)
    _run_until(first, request, 4)
    path = first.snapshot(request, tmp_path / "session.safetensors")
    first.abort(request)
    assert first.blocks.num_used == 0

    second = _engine(tiny_model, tokenizer, num_blocks=5)
    second.add_request([0, 1, 2], SamplingParams(max_tokens=1))  # so the restored blocks get other ids
    second.step()
    resumed = second.resume(path)
    calls = second.runner.num_forward_calls
    out = _run_until(second, resumed, 10).output(resumed)
    assert out.token_ids == whole.token_ids and out.finish_reason == "length"
    assert second.runner.num_forward_calls - calls == 6  # one decode step per remaining token, no prefill
    assert second.blocks.num_used == 0

    size = path.stat().st_size
    expected = KVPlan(tiny_model.config).request_bytes(2 * 128)  # 2 blocks + window and state
    assert expected <= size < expected + 64 * 1024


def test_snapshot_of_a_request_without_a_cache_is_refused(tiny_model, tokenizer, tmp_path):
    engine = _engine(tiny_model, tokenizer)
    request = engine.add_request(PROMPT, SamplingParams(max_tokens=3))
    with pytest.raises(ValueError, match=f"request {request} is not running with a cache"):
        engine.snapshot(request, tmp_path / "x.safetensors")


@pytest.mark.parametrize("saved_by, resumed_by", [(True, True), (True, False), (False, True)])
def test_snapshots_move_between_speculative_and_plain_engines(tiny_model, tokenizer, tmp_path, saved_by, resumed_by):
    params = SamplingParams(temperature=0, max_tokens=10)
    whole = _engine(tiny_model, tokenizer, speculative=True)
    whole_id = whole.add_request(PROMPT, params)
    expected = _run_until(whole, whole_id, 10).output(whole_id).token_ids

    first = _engine(tiny_model, tokenizer, speculative=saved_by)
    request = first.add_request(PROMPT, params)
    _run_until(first, request, 4)
    path = first.snapshot(request, tmp_path / "session.safetensors")
    second = _engine(tiny_model, tokenizer, speculative=resumed_by)
    resumed = second.resume(path)
    if saved_by and resumed_by:  # the MTP window came along: drafting goes on as before the snapshot
        slot, window = second.memory.slots[resumed], first.runner.cache.mtp[0].window[first.memory.slots[request]]
        assert torch.equal(second.runner.cache.mtp[0].window[slot], window)
    assert _run_until(second, resumed, 10).output(resumed).token_ids == expected

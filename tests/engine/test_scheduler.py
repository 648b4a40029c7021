"""Scheduling decisions, without tensors: chunked prefill under the budget, decodes first, preemption."""

import pytest

from dsv4.cache.block_manager import BlockManager, CacheFull
from dsv4.engine.request_memory import RequestMemory
from dsv4.engine.sampling_params import SamplingParams
from dsv4.engine.scheduler import Scheduler, SchedulerConfig
from dsv4.engine.sequence import Sequence, SequenceStatus


def _memory(num_blocks: int) -> RequestMemory:
    """Blocks of 4 tokens, slots for 16 requests, no tensors."""
    return RequestMemory(BlockManager(num_blocks, 4), None, 16)


def _seq(i: int, prompt_len: int, max_tokens: int = 4) -> Sequence:
    return Sequence(i, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens))


def _run(sched: Scheduler) -> list[tuple[int, int, int]]:
    """One step as the engine does it: schedule, mark computed, append a token to the sampling sequences."""
    chunks = sched.schedule()
    for c in chunks:
        sched.advance(c)
    for c in chunks:
        if c.samples:
            c.seq.append(99)
    return [(c.seq.seq_id, c.start, c.n) for c in chunks]


def test_chunked_prefill_under_the_token_budget_then_decode():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=4), _memory(16))
    seq = _seq(0, 10)
    sched.add(seq)
    assert [_run(sched) for _ in range(4)] == [[(0, 0, 4)], [(0, 4, 4)], [(0, 8, 2)], [(0, 10, 1)]]
    assert len(seq) == 12 and len(sched.blocks.table(0)) == 3  # 11 tokens in the cache -> 3 blocks of 4


def test_decodes_go_first_and_share_the_budget_with_prefill_chunks():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=6), _memory(64))
    sched.add(_seq(0, 3))
    assert _run(sched) == [(0, 0, 3)]
    sched.add(_seq(1, 20))
    assert _run(sched) == [(0, 3, 1), (1, 0, 5)]
    assert _run(sched) == [(0, 4, 1), (1, 5, 5)]
    sched.finish(sched.running[0], "stop")
    assert _run(sched) == [(1, 10, 6)]
    assert sched.blocks.table(0) == []


def test_max_num_seqs_keeps_the_rest_waiting():
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=100), _memory(64))
    for i in range(3):
        sched.add(_seq(i, 5))
    assert [c[0] for c in _run(sched)] == [0, 1]
    assert [s.seq_id for s in sched.waiting] == [2]


def test_preemption_frees_the_latest_request_and_recomputes_it():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=100), _memory(4))
    a, b = _seq(0, 8, max_tokens=8), _seq(1, 8, max_tokens=8)
    sched.add(a)
    sched.add(b)
    assert _run(sched) == [(0, 0, 8), (1, 0, 8)]  # 2 + 2 blocks, all used
    # both need a third block for position 8; b (admitted last) is preempted, a decodes
    assert _run(sched) == [(0, 8, 1)]
    assert b.status == SequenceStatus.WAITING and b.num_computed == 0 and sched.blocks.table(1) == []
    assert sched.num_preemptions == 1
    sched.finish(a, "stop")
    assert _run(sched) == [(1, 0, 9)]  # prompt + its sampled token, recomputed in one chunk


def test_a_request_larger_than_the_cache_is_refused_at_once():
    sched = Scheduler(SchedulerConfig(), _memory(2))
    with pytest.raises(CacheFull, match="request 0 needs 3 more blocks"):
        sched.add(_seq(0, 8, max_tokens=1))


def test_finish_of_a_waiting_request_removes_it():
    sched = Scheduler(SchedulerConfig(max_num_seqs=1), _memory(8))
    a, b = _seq(0, 3), _seq(1, 3)
    sched.add(a)
    sched.add(b)
    _run(sched)
    sched.finish(b, "abort")
    assert not sched.waiting and b.finish_reason == "abort"
    sched.finish(a, "abort")
    assert sched.is_finished() and sched.blocks.num_used == 0


def test_prompt_chunks_end_at_block_boundaries_when_aligned():
    # as far as the budget reaches, then at the prompt's last full block (8), then the rest; then decoding
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=100, align_prefill=4), _memory(16))
    sched.add(_seq(0, 10))
    assert [_run(sched) for _ in range(3)] == [[(0, 0, 8)], [(0, 8, 2)], [(0, 10, 1)]]
    # a budget of 6: the chunk ends back at 4, the next one at 8
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=6, align_prefill=4), _memory(16))
    sched.add(_seq(0, 10))
    assert [_run(sched) for _ in range(4)] == [[(0, 0, 4)], [(0, 4, 4)], [(0, 8, 2)], [(0, 10, 1)]]
    # a budget below one block: unaligned progress, then back on a boundary
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=3, align_prefill=4), _memory(16))
    sched.add(_seq(0, 10))
    assert [_run(sched) for _ in range(4)] == [[(0, 0, 3)], [(0, 3, 1)], [(0, 4, 3)], [(0, 7, 1)]]


def test_a_speculating_decode_gets_room_for_its_draft_only_when_blocks_are_free():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=100), _memory(3))
    a = _seq(0, 7, max_tokens=4)
    a.lookahead = 1
    sched.add(a)
    assert _run(sched) == [(0, 0, 7)]  # 7 prompt tokens + the draft's position: still 2 blocks
    assert len(sched.blocks.table(0)) == 2
    assert _run(sched) == [(0, 7, 1)]  # the decode at 7: its draft at 8 needs a third block, which is free
    assert len(sched.blocks.table(0)) == 3 and sched.memory.covers(0, 9)
    b = _seq(1, 7, max_tokens=4)
    b.lookahead = 1
    sched.finish(a, "stop")
    sched.add(b)
    sched.add(_seq(2, 3, max_tokens=1))  # takes the third block: b's draft finds none, and preempts no one
    assert _run(sched) == [(1, 0, 7), (2, 0, 3)]
    assert _run(sched) == [(1, 7, 1), (2, 3, 1)]
    assert sched.num_preemptions == 0 and sched.memory.covers(1, 8) and not sched.memory.covers(1, 9)


def test_preemption_and_finish_give_back_the_slot_with_the_blocks():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=100), _memory(4))
    a, b = _seq(0, 8, max_tokens=8), _seq(1, 8, max_tokens=8)
    sched.add(a)
    sched.add(b)
    _run(sched)
    assert set(sched.memory.slots) == {0, 1}
    _run(sched)  # b preempted
    assert set(sched.memory.slots) == {0} and sched.blocks.table(1) == []
    sched.finish(a, "stop")
    assert not sched.memory.slots and sched.blocks.num_used == 0


def test_kept_drafts_must_lie_in_reserved_blocks():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=100), _memory(4))
    sched.add(_seq(0, 8, max_tokens=4))  # no lookahead: blocks for 8 tokens only
    chunk = sched.schedule()[0]
    with pytest.raises(RuntimeError, match="request 0: 1 draft token"):
        sched.advance(chunk, drafts=1)

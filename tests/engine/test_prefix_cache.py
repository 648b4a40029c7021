"""Prefix sharing: a request whose prompt starts like an earlier one reuses its published blocks and the slot
copy at the last common block boundary, computes only the rest, and generates exactly what it would alone."""

import pytest
import torch

from dsv4.cache.block_manager import BlockManager, prefix_hashes
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

from .conftest import Collector

COMMON = list(range(10, 310))  # 300 tokens: 2 full blocks of 128 in common
A, B = COMMON + [1000, 1001, 1002], COMMON + [7, 8, 9, 11, 12]
GREEDY = SamplingParams(temperature=0, max_tokens=6)


@pytest.fixture(scope="module")
def model():
    # no FP8 activation rounding: blocks decoded token by token are compared with the same blocks prefilled, which
    # it would set apart by whole FP8 steps (see conftest.tiny_model)
    config = preset("tiny").replace(simulate_act_quant=False)
    return init_random_(Transformer(config, torch.float32), seed=8).eval()


def _engine(model, **config) -> Engine:
    return Engine(model, None, EngineConfig(**{"num_blocks": 8, "prefix_cache_size": 4, **config}))


@pytest.fixture(scope="module")
def alone(model):
    engine = _engine(model)
    out = engine.generate([B], GREEDY)[0].token_ids
    return out, engine.runner.num_forward_calls


def test_a_later_request_reuses_the_common_prefix(model, alone):
    engine = _engine(model)
    engine.generate([A], GREEDY)
    calls = engine.runner.num_forward_calls
    out = engine.generate([B], GREEDY)[0].token_ids
    assert out == alone[0]
    assert engine.prefix.hit_tokens == 256
    assert engine.runner.num_forward_calls - calls == alone[1] - 1  # the prefill chunk [0,256) skipped
    assert engine.blocks.num_used == 0


def test_concurrent_requests_share_blocks(model, alone):
    engine = _engine(model)
    steps = Collector(engine)
    a = engine.add_request(A, GREEDY)
    while not steps.num_output(a):
        steps.step()
    b = engine.add_request(B, GREEDY)
    shared = engine.blocks.table(b)[:2]
    assert shared == engine.blocks.table(a)[:2] and all(engine.blocks.refs[x] == 2 for x in shared)
    assert engine.blocks.num_used == 3  # B holds only the 2 shared blocks so far: no new memory
    assert steps.until_done(a, b)[1].token_ids == alone[0]
    assert engine.blocks.num_used == 0


def test_reallocated_blocks_are_no_longer_shared(model, alone):
    engine = _engine(model, num_blocks=3)
    engine.generate([A], GREEDY)
    engine.generate([list(range(500, 800))], GREEDY)  # takes all 3 blocks: the published ones are overwritten
    out = engine.generate([B], GREEDY)[0].token_ids
    assert engine.prefix.hit_tokens == 0
    assert out == alone[0]


@pytest.mark.parametrize("speculative", [False, True])
def test_the_next_turn_of_a_conversation_reuses_the_reply(model, speculative):
    # an agent's next request is the conversation so far: prompt + the reply + new tokens (a tool result); with
    # speculation a step computes 1 or 2 tokens, and the slot is kept only where the cache ends at a boundary
    engine = _engine(model, speculative=speculative)
    first = engine.generate([COMMON[:100]], SamplingParams(temperature=0, max_tokens=300, ignore_eos=True))[0]
    turn = COMMON[:100] + first.token_ids + [7, 8, 9]  # 403 tokens: the reply's blocks end at 384
    calls = engine.runner.num_forward_calls
    out = engine.generate([turn], GREEDY)[0].token_ids
    hit = engine.prefix.hit_tokens  # blocks written while decoding the reply (a 2-token step may skip a boundary)
    assert hit == 384 or (speculative and hit == 256), hit
    if not speculative:  # 3 blocks reused: one prefill chunk of 19 tokens, then decoding
        assert engine.runner.num_forward_calls - calls == 1 + GREEDY.max_tokens - 1
    assert out == _engine(model, prefix_cache_size=0).generate([turn], GREEDY)[0].token_ids
    assert engine.blocks.num_used == 0 and not engine.prefix.hashes


def _speculate(engine: Engine, prompt: list[int]) -> tuple[torch.Tensor, list[int | None], list[int]]:
    """-> the request's MTP window when its prompt is done, the MTP draft after each step from then on, and its
    output."""
    request, window, drafts, steps = engine.add_request(prompt, GREEDY), None, [], Collector(engine)
    while request in engine.seqs:
        steps.step()
        if window is None and steps.num_output(request):
            window = engine.runner.cache.mtp[0].window[engine.memory.slots[request]].clone()
        if window is not None:
            drafts.append(engine.speculator.drafts.get(request))
    return window, drafts, steps.output(request).token_ids


def test_a_prefix_hit_restores_the_mtp_window_and_drafts_as_alone(model, alone):
    alone_window, alone_drafts, _ = _speculate(_engine(model, speculative=True), B)
    engine = _engine(model, speculative=True)
    engine.generate([A], GREEDY)  # publishes the common blocks with slot copies (main and MTP windows)
    engine.generate([list(range(2000, 2300))], GREEDY)  # the same slot: its MTP window now holds other tokens
    window, drafts, out = _speculate(engine, B)
    assert engine.prefix.hit_tokens == 256
    assert torch.equal(window, alone_window) and drafts == alone_drafts
    assert out == alone[0]


def test_block_manager_sharing_without_tensors():
    bm = BlockManager(num_blocks=4, block_size=2)
    tokens = [1, 2, 3, 4, 5]
    h = prefix_hashes(tokens, 2, 2)
    assert h == prefix_hashes(tokens[:4] + [9], 2, 2) and h[1] != prefix_hashes([1, 2, 3, 5], 2, 2)[1]
    bm.grow(0, 5)
    bm.publish(0, h)
    assert bm.cached(h) == bm.table(0)[:2] and bm.cached(h[:1] + [123]) == bm.table(0)[:1]
    bm.free(0)
    assert bm.num_used == 0 and bm.cached(h) == [0, 1]  # freed but still cached
    bm.share(1, [0, 1])
    assert bm.num_used == 2 and bm.refs[:2] == [1, 1]
    bm.share(2, [0])
    bm.free(1)
    assert bm.num_used == 1 and bm.refs[0] == 1
    bm.free(2)
    bm.grow(3, 8)  # every block handed out again: nothing stays cached
    assert bm.cached(h) == []


def test_requests_sharing_a_system_prompt_share_its_blocks(tiny_model, tokenizer):
    # the first prompt's prefill ends a chunk at the block before its last user turn, so a second conversation
    # with the same system prompt (and another long question) starts from there
    from dsv4.encoding import encode_messages

    system = {"role": "system", "content": "You are a careful assistant. " * 40}  # ~240 tokens
    a = encode_messages([system, {"role": "user", "content": "Tell me about caches. " * 100}], thinking_mode="chat")
    b = encode_messages([system, {"role": "user", "content": "Explain paging. " * 100}], thinking_mode="chat")
    engine = Engine(tiny_model, tokenizer, EngineConfig(num_blocks=16, prefix_cache_size=4))
    ids_a, ids_b = engine.encode(a), engine.encode(b)
    common = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y)
    assert common >= 128 and len(ids_a) > 512  # premise: a shared system prompt, then long, different questions
    engine.generate([a], GREEDY)
    out = engine.generate([b], GREEDY)[0].token_ids
    assert engine.prefix.hit_tokens == common // 128 * 128 > 0
    assert out == Engine(tiny_model, tokenizer, EngineConfig(num_blocks=16)).generate([b], GREEDY)[0].token_ids

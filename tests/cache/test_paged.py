"""The paged, packed cache behind the model: logits equal the dense float cache's (with the RoPE dims rounded to
BF16 as the 584 B entry stores them), batches of requests in scattered blocks and slots, and allocated bytes
equal the KV plan."""

import pytest
import torch

from dsv4.cache.paged import PagedKVCache
from dsv4.cache.plan import KVPlan
from dsv4.cache.views import SlotRows
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

N = 300  # > 2 HCA blocks, 2 paged blocks of 128 and a part


@pytest.fixture(scope="module")
def model():
    return init_random_(Transformer(preset("test").replace(index_topk=16), torch.float32), seed=5)


class RopeBF16:
    """Float storage that rounds the RoPE dims to BF16 on write, as the packed main entry does."""

    def __init__(self, rope_dim: int):
        self.rope_dim = rope_dim

    def pack(self, x):
        return torch.cat([x[..., :-self.rope_dim], x[..., -self.rope_dim:].bfloat16().float()], dim=-1)

    def unpack(self, x, dtype):
        return x.to(dtype)

    def gather(self, pool, index, dtype):
        return self.unpack(pool.index_select(0, index.flatten()).view(*index.shape, *pool.shape[1:]), dtype)


def rounded_reference_cache(model, max_len: int, b: int = 1):
    cache = model.new_cache(b, max_len)
    codec, row = RopeBF16(model.config.rope_head_dim), torch.arange(b)
    for layer in cache.layers:
        layer.window = SlotRows(layer.window, row, torch.float32, codec)
        if layer.compressor is not None:
            layer.compressor.entries = SlotRows(layer.compressor.entries, row, torch.float32, codec)
    return cache


def _run(model, ids, cache, chunks):
    """Prefill in the given chunks, then decode the rest one token at a time; logits of every step [b,steps,v]."""
    out, pos = [], 0
    for n in chunks + [1] * (ids.size(1) - sum(chunks)):
        out.append(model(ids[:, pos:pos + n], cache=cache, start_pos=pos))
        pos += n
    return torch.stack(out, 1)


def _ids(seed: int, b: int = 1):
    return torch.randint(0, 512, (b, N), generator=torch.Generator().manual_seed(seed))


def test_paged_packed_logits_equal_the_rounded_dense_reference(model):
    ids, chunks = _ids(0), [130, 3, 125, 34]  # then 8 decode steps
    paged = PagedKVCache(model.config, num_blocks=6, block_size=128, max_requests=2)
    got = _run(model, ids, paged.view([1], [[4, 0, 2]]), chunks)
    ref = _run(model, ids, rounded_reference_cache(model, N), chunks)
    assert (got - ref).abs().max().item() < 1e-4
    plain = _run(model, ids, model.new_cache(1, N), chunks)
    # the model simulates the entry's BF16 RoPE dims itself (simulate_kv_rope_bf16): its plain cache agrees too
    assert (got - plain).abs().max().item() < 1e-4


def test_a_batch_of_requests_in_scattered_blocks_and_slots(model):
    ids, chunks = _ids(1, b=2), [100, 190]
    paged = PagedKVCache(model.config, num_blocks=8, block_size=128, max_requests=4)
    got = _run(model, ids, paged.view([3, 0], [[5, 1, 6], [2, 7, 0]]), chunks)
    ref = _run(model, ids, rounded_reference_cache(model, N, b=2), chunks)
    assert (got - ref).abs().max().item() < 1e-4


def test_slot_reuse_after_reset(model):
    ids, chunks = _ids(2), [N - 2]
    paged = PagedKVCache(model.config, num_blocks=3, block_size=128, max_requests=1)
    first = _run(model, ids, paged.view([0], [[0, 1, 2]]), chunks)
    paged.reset_slot(0)
    again = _run(model, ids, paged.view([0], [[2, 0, 1]]), chunks)
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", ["v4-flash", "tiny"])
def test_allocation_equals_the_plan(name):
    config = preset(name)
    plan = KVPlan(config)
    with torch.device("meta"):  # shapes and dtypes only
        paged = PagedKVCache(config, num_blocks=10, block_size=256, max_requests=3)
    assert paged.block_bytes() == 256 * plan.bytes_per_token()
    assert paged.slot_bytes() == plan.fixed_bytes()
    assert paged.nbytes() == 10 * 256 * plan.bytes_per_token() + 3 * plan.fixed_bytes()


def test_limits_are_named(model):
    with pytest.raises(ValueError, match="block_size must be a positive multiple of 128"):
        PagedKVCache(model.config, num_blocks=4, block_size=64)
    paged = PagedKVCache(model.config, num_blocks=4, block_size=128, max_requests=1)
    with pytest.raises(ValueError, match=r"exceeds the blocks allocated \(128 tokens\)"):
        model(_ids(0)[:, :129], cache=paged.view([0], [[1]]))

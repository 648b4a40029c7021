"""Decode over the paged, packed cache: gathering and dequantizing only the selected entries gives the logits
of the dense path that dequantizes every entry and masks to the same selection; rows at different positions
decode in one call as they do one at a time."""

import pytest
import torch

from dsv4.cache.paged import PagedKVCache
from dsv4.model import Transformer, preset
from dsv4.model.attention.attention import distinct_entries
from dsv4.model.init import init_random_

LENGTHS = [127, 260, 300]  # 65-75 CSA entries each (> index_topk 16), 1-2 HCA entries; 3 blocks of 128 at most


@pytest.fixture(scope="module")
def model():
    # no FP8 activation rounding: rows decoded in one call or alone differ by float32 reassociation, which it would
    # turn into whole FP8 steps (tests/engine/test_engine_fp8.py judges the engine with it on)
    config = preset("test").replace(index_topk=16, simulate_act_quant=False)
    return init_random_(Transformer(config, torch.float32), seed=4)


def _prefilled(model, seqs) -> PagedKVCache:
    cache = PagedKVCache(model.config, num_blocks=9, block_size=128, max_requests=3)
    for i, (ids, n) in enumerate(zip(seqs, LENGTHS, strict=True)):
        model(ids[:, :n], cache=cache.view([i], [_table(i)]), start_pos=0)
    return cache


def _table(i: int) -> list[int]:
    return [8 - i, i, 3 + i]  # scattered blocks


def _seqs():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 512, (1, n + 4), generator=g) for n in LENGTHS]


def _one_at_a_time(model, seqs, gathered: bool) -> list[torch.Tensor]:
    cache, out = _prefilled(model, seqs), []
    model.set_gathered_decode(gathered)
    try:
        for i, (ids, n) in enumerate(zip(seqs, LENGTHS, strict=True)):
            view = cache.view([i], [_table(i)])
            out.append(torch.cat([model(ids[:, p:p + 1], cache=view, start_pos=p) for p in range(n, n + 4)]))
    finally:
        model.set_gathered_decode(True)
    return out  # per request [4,vocab]


def test_gathered_decode_over_packed_entries_equals_the_dense_path(model):
    seqs = _seqs()
    for a, b in zip(_one_at_a_time(model, seqs, True), _one_at_a_time(model, seqs, False), strict=True):
        assert (a - b).abs().max().item() < 1e-4


def test_rows_at_different_positions_decode_in_one_call(model):
    seqs = _seqs()
    alone = _one_at_a_time(model, seqs, True)
    cache = _prefilled(model, seqs)
    view = cache.view([0, 1, 2], [_table(i) for i in range(3)])
    for step in range(4):
        pos = torch.tensor(LENGTHS) + step
        ids = torch.cat([s[:, p:p + 1] for s, p in zip(seqs, pos.tolist(), strict=True)])  # [3,1]
        logits = model(ids, cache=view, start_pos=pos)
        # a batch of rows changes the matmuls' float summation order (~1e-6); written into the cache, such a
        # difference can cross an FP8 rounding boundary (one FP8 ulp, ~6% of a value), which shows at ~1e-2 in
        # the logits. The float cache's test (tests/model/test_gathered_decode.py) checks the rows to 1e-5.
        for i in range(3):
            assert (logits[i] - alone[i][step]).abs().max().item() < 0.1
            assert logits[i].argmax() == alone[i][step].argmax()


def test_prefill_gathers_each_distinct_packed_entry_as_direct_indexing_does(model):
    cache = PagedKVCache(model.config, num_blocks=4, block_size=128, max_requests=2)
    cache.layers[1].entries.copy_(cache.main.pack(torch.randn(4, 32, 512, generator=torch.Generator().manual_seed(3))))
    entries = cache.view([0, 1], [[3, 1], [0, 2]]).layers[1].compressor.entries  # CSA: 32 entries per block
    idx = torch.randint(-1, 64, (2, 5, 6), generator=torch.Generator().manual_seed(4))  # -1: none, read entry 0
    direct = entries[torch.arange(2)[:, None, None], idx.clamp_min(0)]  # [2,5,6,512]
    rows, index = distinct_entries(entries, idx)
    assert torch.equal(rows[index], direct) and rows.size(0) == len(set(idx.clamp_min(0)[0].flatten().tolist())) + \
        len(set(idx.clamp_min(0)[1].flatten().tolist()))  # each distinct entry of each row read once


def test_distinct_entries_alike_over_few_and_many_entries():
    # few entries: numbered by marks over every entry id; many (a long context's): by sorting the picked ids
    g = torch.Generator().manual_seed(5)
    for n in (40, 5000):
        entries = torch.randn(2, n, 4, generator=g)
        idx = torch.randint(-1, n, (2, 3, 6), generator=g)
        rows, index = distinct_entries(entries, idx)
        assert torch.equal(rows[index], entries[torch.arange(2)[:, None, None], idx.clamp_min(0)])
        assert rows.size(0) == sum(len(set(idx.clamp_min(0)[r].flatten().tolist())) for r in range(2))

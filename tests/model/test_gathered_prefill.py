"""Prefill gathers, per query, only the entries it attends to (the indexer's top-k in CSA layers, the entries
complete for it in HCA layers, its window slice), a few queries at a time: logits equal the dense masked
reference path, in one call and in chunks that continue a cache, however finely the queries are split.

KV format simulation is off: the two paths sum in different orders (~1e-6), and written into the next layer's
FP8-rounded KV such a difference can cross a rounding boundary (one FP8 ulp, ~6% of a value). The packed cache's
tests (tests/cache/test_paged.py) run the gathered prefill with the formats on."""

import pytest
import torch

from dsv4 import kernels
from dsv4.model import Transformer, preset
from dsv4.model.attention import gathered_sink_attention, indexer, sink_attention
from dsv4.model.attention.attention import window_mask
from dsv4.model.attention.sparse import OwnKeys
from dsv4.model.init import init_random_

from .test_parity_hf import _antisymmetric_indexer_heads_

CHUNKS = [(0, 300), (300, 1), (301, 450), (751, 530)]  # 320 CSA entries (> index_topk 16), 10 HCA entries


@pytest.fixture(scope="module")
def model():
    config = preset("test").replace(index_topk=16, index_n_heads=2, simulate_kv_quant=False, simulate_act_quant=False)
    model = init_random_(Transformer(config, torch.float32), seed=5)
    _antisymmetric_indexer_heads_(model)  # no top-k ties at zero scores: the selection is unique
    return model


def _prefill(model, ids, gathered: bool, budget: int = 1 << 22) -> torch.Tensor:
    model.set_gathered_prefill(gathered)
    for layer in model.layers:
        layer.attn.budget = budget
    try:
        cache = model.new_cache(ids.size(0), ids.size(1))
        return torch.cat([model(ids[:, a:a + n], cache=cache, start_pos=a, all_logits=True)
                          for a, n in CHUNKS], dim=1)  # [b,s,vocab]
    finally:
        model.set_gathered_prefill(True)
        for layer in model.layers:
            layer.attn.budget = 1 << 22


@pytest.mark.parametrize("tables", [False, True])  # the window as a shared masked slice (Python ops) or a table
@pytest.mark.parametrize("budget", [1 << 22, 1 << 13])  # one step per chunk; a few queries per step
def test_gathered_prefill_equals_the_dense_reference_path(model, budget, tables, monkeypatch):
    if tables and not kernels.enable():
        pytest.fail("the C++ kernels did not build (is a C++ compiler installed?)")
    if not tables:
        monkeypatch.setattr(kernels, "op", lambda name, on=None: None)
    ids = torch.randint(0, 512, (2, sum(n for _, n in CHUNKS)), generator=torch.Generator().manual_seed(0))
    dense = _prefill(model, ids, False)
    err = (_prefill(model, ids, True, budget) - dense).abs().max().item()
    assert dense.std() > 0.3
    assert err < 1e-4, err


def test_tied_scores_select_alike_in_both_paths(monkeypatch):
    # without the antisymmetric heads a quarter of the scores are exactly 0, and a query whose two head weights are
    # both negative ranks its zeros first: its selection is decided by the tie rule alone (lower entry first in
    # both paths, however the gathered path tiles the entries)
    config = preset("test").replace(index_topk=16, index_n_heads=2, simulate_kv_quant=False, simulate_act_quant=False)
    tied = init_random_(Transformer(config, torch.float32), seed=5)
    ids = torch.randint(0, 512, (2, sum(n for _, n in CHUNKS)), generator=torch.Generator().manual_seed(0))
    dense = _prefill(tied, ids, False)
    for budget in (1 << 22, 1 << 13):
        assert (_prefill(tied, ids, True, budget) - dense).abs().max().item() < 1e-4
    ranked = indexer.ranked

    def higher_first(scores, k, counts=None):  # the opposite rule: equal scores, the higher entry first
        if counts is not None:  # (a decode step's rows: only the first counts[i] entries compete)
            scores = scores.masked_fill(torch.arange(scores.size(-1)) >= counts[:, None], float("-inf"))
        top = ranked(scores.flip(-1), k)
        return torch.where(top < 0, top, scores.size(-1) - 1 - top)

    monkeypatch.setattr(indexer, "ranked", higher_first)
    assert (_prefill(tied, ids, False) - dense).abs().max().item() > 1e-3  # the rule decides: not vacuous


def test_selection_is_not_vacuous(model):
    """Attending to every complete entry instead of the top-k changes the logits."""
    ids = torch.randint(0, 512, (1, 1281), generator=torch.Generator().manual_seed(1))
    wide = Transformer(model.config.replace(index_topk=1024), torch.float32)
    wide.load_state_dict(model.state_dict())
    assert (wide(ids) - model(ids)).abs().max() > 1e-2


def test_gathered_sink_attention_equals_the_dense_kernel_per_query():
    g = torch.Generator().manual_seed(2)
    q, shared, own = torch.randn(2, 5, 3, 16, generator=g), torch.randn(2, 7, 16, generator=g), \
        torch.randn(2, 5, 4, 16, generator=g)
    shared_mask, own_mask = torch.rand(2, 5, 7, generator=g) > 0.4, torch.rand(2, 5, 4, generator=g) > 0.3
    shared_mask[..., 0] = True  # every query sees a key
    sink = torch.randn(3, generator=g)
    table = OwnKeys(own.flatten(0, 2), torch.arange(2 * 5 * 4).view(2, 5, 4), own_mask)
    got = gathered_sink_attention(q, shared, shared_mask, table, sink, 0.25)
    for t in range(5):  # one query at a time: its keys = the shared ones ++ its own
        keys = torch.cat([shared, own[:, t]], dim=1)  # [b,7+4,d]
        mask = torch.cat([shared_mask[:, t], own_mask[:, t]], dim=-1)[:, None]  # [b,1,11]
        want = sink_attention(q[:, t:t + 1], keys, mask, sink, 0.25)
        assert torch.allclose(got[:, t:t + 1], want, atol=1e-6)


def test_window_table_lists_each_querys_window():
    # a chunk of queries at positions 3..9 over a slice of keys at positions 0..9, window 4: query p sees p-3..p
    g = torch.Generator().manual_seed(4)
    keys, q_pos = torch.randn(2, 10, 8, generator=g), torch.arange(3, 10)
    table = OwnKeys.window(keys, q_pos, 0, 4)
    assert table.index.shape == table.mask.shape == (2, 7, 4)
    for b in range(2):
        for i, p in enumerate(q_pos.tolist()):
            assert table.index[b, i].tolist() == [b * 10 + x for x in range(p - 3, p + 1)]
    assert table.mask.all()
    early = OwnKeys.window(keys[:, :3], torch.arange(0, 3), 0, 4)  # the first queries: fewer keys than the window
    assert early.mask[0].tolist() == [[False, False, False, True], [False, False, True, True],
                                      [False, True, True, True]]
    # as attention: equal to the slice shared under the window mask
    q, sink = torch.randn(2, 7, 3, 8, generator=g), torch.randn(3, generator=g)
    mask = window_mask(q_pos, torch.arange(10), 4).expand(2, -1, -1)
    want = gathered_sink_attention(q, keys, mask, None, sink, 0.3)
    got = gathered_sink_attention(q, None, None, table, sink, 0.3)
    assert torch.allclose(got, want, atol=1e-6)

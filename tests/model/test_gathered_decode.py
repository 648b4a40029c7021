"""Decode steps gather only the entries they attend to (the indexer's top-k in CSA layers, all entries in HCA
layers): logits equal the dense masked reference path, which selects the same entries; and a decode step of rows
at different positions (per-row start_pos) equals running the rows one at a time."""

import pytest
import torch

from dsv4.model import Transformer, preset
from dsv4.model.attention import Indexer
from dsv4.model.init import init_random_

PROMPT = 515  # 128 CSA entries (> index_topk 16), 4 HCA entries; decode closes a CSA block every 4 steps


@pytest.fixture(scope="module")
def model():
    # no GEMM-input FP8 rounding: it would turn the paths' float32 reassociation into FP8 steps (test_golden)
    config = preset("test").replace(index_topk=16, simulate_act_quant=False)
    return init_random_(Transformer(config, torch.float32), seed=3)


def _decode(model, ids, gathered: bool, steps: int = 6) -> torch.Tensor:
    model.set_gathered_decode(gathered)
    try:
        cache = model.new_cache(ids.size(0), PROMPT + steps)
        out = [model(ids[:, :PROMPT], cache=cache, start_pos=0)]
        out += [model(ids[:, p:p + 1], cache=cache, start_pos=p) for p in range(PROMPT, PROMPT + steps)]
    finally:
        model.set_gathered_decode(True)
    return torch.stack(out, 1)  # [b,steps+1,vocab]


def test_gathered_top_k_decode_equals_the_dense_reference_path(model):
    ids = torch.randint(0, 512, (2, PROMPT + 6), generator=torch.Generator().manual_seed(0))
    err = (_decode(model, ids, True) - _decode(model, ids, False)).abs().max().item()
    assert err < 1e-4, err


def test_decode_scoring_keys_in_tiles_equals_one_pass(model):
    ids = torch.randint(0, 512, (2, PROMPT + 6), generator=torch.Generator().manual_seed(2))
    whole = _decode(model, ids, True)
    indexers = [layer.attn.indexer for layer in model.layers if hasattr(layer.attn, "indexer")]
    for indexer in indexers:
        indexer.decode_tile = 7  # 128+ entries: ~20 tiles, the last one partial
    try:
        tiled = _decode(model, ids, True)
    finally:
        for indexer in indexers:
            indexer.decode_tile = 8192
    assert indexers and (tiled - whole).abs().max().item() < 1e-5


def test_decode_rows_at_different_positions_equal_one_at_a_time(model):
    lengths = [127, 300, 515]  # row 0 closes an HCA block at its first step, the others CSA blocks in turn
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 512, (1, n + 5), generator=g) for n in lengths]
    alone, caches = [], []
    for ids, n in zip(seqs, lengths, strict=True):
        cache = model.new_cache(1, n + 5)
        model(ids[:, :n], cache=cache, start_pos=0)
        caches.append(cache)
        alone.append(torch.cat([model(ids[:, p:p + 1], cache=cache, start_pos=p) for p in range(n, n + 5)]))
    batch = model.new_cache(3, max(lengths) + 5)
    for i, (ids, n) in enumerate(zip(seqs, lengths, strict=True)):  # prefill row i alone into row i
        one = model.new_cache(1, max(lengths) + 5)
        model(ids[:, :n], cache=one, start_pos=0)
        _copy_row(one, batch, i)
    got = []
    for step in range(5):
        pos = torch.tensor(lengths) + step
        ids = torch.cat([s[:, p:p + 1] for s, p in zip(seqs, pos.tolist(), strict=True)])  # [3,1]
        got.append(model(ids, cache=batch, start_pos=pos))
    for i in range(3):
        err = (torch.stack([g[i] for g in got]) - alone[i]).abs().max().item()
        assert err < 1e-5, (i, err)


def test_per_row_positions_are_checked(model):
    cache = model.new_cache(2, 16)
    with pytest.raises(ValueError, match="per-row start_pos"):
        model(torch.zeros(2, 2, dtype=torch.long), cache=cache, start_pos=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=cache, start_pos=torch.tensor([3, 16]))


def _copy_row(src, dst, row: int):
    for a, b in zip(src.layers, dst.layers, strict=True):
        b.window[row] = a.window[0]
        for sa, sb in ((a.compressor, b.compressor), (a.indexer, b.indexer)):
            if sa is not None:
                sb.entries[row, :sa.entries.size(1)] = sa.entries[0]
                sb.kv_state[row], sb.score_state[row] = sa.kv_state[0], sa.score_state[0]


def test_decode_selects_the_entries_prefill_selects_where_scores_tie(monkeypatch):
    # two indexer heads, no antisymmetry: a quarter of the scores are exactly 0, and a query whose head weights are
    # both negative ranks its zeros first. Decode (Indexer.step) and prefill (Indexer.select, the path of an MTP
    # verify step) keep the same ones (equal scores: the lower entries) and list them alike
    config = preset("test").replace(index_topk=16, index_n_heads=2, simulate_kv_quant=False,
                                    simulate_act_quant=False)
    model = init_random_(Transformer(config, torch.float32), seed=5)
    seen: dict[str, list[torch.Tensor]] = {"step": [], "select": []}
    for name in seen:
        method = getattr(Indexer, name)
        monkeypatch.setattr(Indexer, name, lambda self, *a, _m=method, _n=name, **k: seen[_n].append(
            _m(self, *a, **k)) or seen[_n][-1])
    ids = torch.randint(0, 512, (2, PROMPT + 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _decode(model, ids, True, steps=8)
        seen["select"].clear()  # (the decode run's prompt)
        model(ids, cache=model.new_cache(2, PROMPT + 8), start_pos=0)
    layers = len(seen["select"])
    assert layers and len(seen["step"]) == 8 * layers
    for i, step in enumerate(seen["step"]):
        prefill = seen["select"][i % layers][:, PROMPT + i // layers]  # [b,k]: that layer, that position
        assert step.size(1) == 16 and (step >= 0).all() and torch.equal(step, prefill), (i, step, prefill)
    # (decode keeping the higher of equal entries instead fails this: checked when the rule was written)

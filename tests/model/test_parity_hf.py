"""Numerics against HF transformers' independent `deepseek_v4` port (format simulation off, same weights)."""

import pytest
import torch
from transformers import DynamicCache

from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

from .hf_oracle import hf_model

# window-only, CSA and HCA layers; hash routing in a window and a CSA layer. index_topk >= number of entries,
# so top-k ties between ReLU-zero indexer scores cannot change the selection.
CONFIG = preset("test").replace(simulate_kv_quant=False, simulate_act_quant=False, index_topk=1024, n_hash_layers=2)
PREFILL, STEPS = 720, 16


def _antisymmetric_indexer_heads_(model: Transformer) -> None:
    """Index head 1 = -head 0, so Σ_h w_h·ReLU(q_h·k) = w·|q_0·k| is nonzero for every entry: no top-k ties."""
    for layer in model.layers:
        if layer.attn.ratio == 4:
            w = layer.attn.indexer.wq_b.weight
            w[128:256] = -w[:128]
            layer.attn.indexer.weights_proj.weight[1] = layer.attn.indexer.weights_proj.weight[0]


@pytest.mark.parametrize("index_topk", [1024, 16])
def test_prefill_and_decode_match_hf_within_1e4(index_topk):
    torch.manual_seed(0)
    config = CONFIG.replace(index_topk=index_topk, index_n_heads=2 if index_topk < 1024 else 4)
    model = init_random_(Transformer(config, torch.float32), seed=1)
    if index_topk < 1024:  # fewer than the 180 entries: the indexer's selection decides what is attended
        _antisymmetric_indexer_heads_(model)
    hf = hf_model(model)
    ids = torch.randint(0, config.vocab_size, (2, PREFILL + STEPS))
    assert [CONFIG.layer_kind(i) for i in range(CONFIG.n_layers)] == ["window", "csa", "hca", "csa"]

    cache, hf_cache = model.new_cache(2, PREFILL + STEPS), DynamicCache(config=hf.config)
    with torch.inference_mode():
        ours = model(ids[:, :PREFILL], cache=cache, start_pos=0, all_logits=True)
        theirs = hf(ids[:, :PREFILL], cache=hf_cache, use_cache=True).logits
        errors = [(ours - theirs).abs().max().item()]
        for pos in range(PREFILL, PREFILL + STEPS):
            ours = model(ids[:, pos:pos + 1], cache=cache, start_pos=pos)
            theirs = hf(ids[:, pos:pos + 1], cache=hf_cache, use_cache=True).logits[:, -1]
            errors.append((ours - theirs).abs().max().item())
    assert theirs.std() > 0.3  # logits carry signal, not a collapsed model
    if index_topk < 1024:  # the selection is not vacuous: attending to all entries changes the logits
        dense = Transformer(config.replace(index_topk=1024), torch.float32)
        dense.load_state_dict(model.state_dict())
        assert (dense(ids[:, :PREFILL]) - model(ids[:, :PREFILL])).abs().max() > 1e-2
    print("max-abs logit error vs HF per step:", errors)
    assert max(errors) < 1e-4, errors

"""Numerics against HF transformers' independent `deepseek_v4` port (format simulation off, same weights)."""

import torch
from hf_oracle import hf_model
from transformers import DynamicCache

from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

# window-only, CSA and HCA layers; hash routing in a window and a CSA layer. index_topk >= number of entries,
# so top-k ties between ReLU-zero indexer scores cannot change the selection.
CONFIG = preset("test").replace(simulate_kv_quant=False, index_topk=1024, n_hash_layers=2)
PREFILL, STEPS = 720, 16


def test_prefill_and_decode_match_hf_within_1e4():
    torch.manual_seed(0)
    model = init_random_(Transformer(CONFIG, torch.float32), seed=1)
    hf = hf_model(model)
    ids = torch.randint(0, CONFIG.vocab_size, (2, PREFILL + STEPS))
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
    print("max-abs logit error vs HF per step:", errors)
    assert max(errors) < 1e-4, errors

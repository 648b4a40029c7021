"""The MTP layer under the cache, and the BF16 compute path."""

import torch

from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

CONFIG = preset("test").replace(index_topk=1024, simulate_kv_quant=False, simulate_act_quant=False)


def test_mtp_cached_decode_equals_full_forward():
    model = init_random_(Transformer(CONFIG, torch.float32), seed=4)
    assert not hasattr(model.mtp[0].attn, "compressor")  # compress_ratios[-1] = 0: window-only
    ids = torch.randint(0, CONFIG.vocab_size, (1, 161), generator=torch.Generator().manual_seed(5))
    inputs, nexts = ids[:, :-1], ids[:, 1:]
    full = model.mtp_logits(model.hidden(inputs), nexts, model.new_cache(1, 160), 0)  # [1,160,v]
    cache = model.new_cache(1, 160)
    h = model.hidden(inputs[:, :150], cache, 0)
    steps = [model.mtp_logits(h, nexts[:, :150], cache, 0)[:, -1]]
    for p in range(150, 160):
        h = model.hidden(inputs[:, p:p + 1], cache, p)
        steps.append(model.mtp_logits(h, nexts[:, p:p + 1], cache, p)[:, -1])
    assert full.shape == (1, 160, CONFIG.vocab_size)
    assert (torch.stack(steps, 1) - full[:, 149:]).abs().max() < 2e-5
    # the MTP logits depend on the following token, not only on the main model's state
    other = model.mtp_logits(model.hidden(inputs), (nexts + 1) % CONFIG.vocab_size, model.new_cache(1, 160), 0)
    assert (other - full).abs().max() > 1e-2


def test_bf16_model_tracks_float32():
    model = init_random_(Transformer(CONFIG, torch.float32), seed=6)
    bf16 = Transformer(CONFIG, torch.bfloat16)
    bf16.load_state_dict(model.state_dict())
    ids = torch.randint(0, CONFIG.vocab_size, (1, 200), generator=torch.Generator().manual_seed(7))
    a, b = model(ids), bf16(ids)
    assert b.dtype == torch.float32 and bf16.layers[1].attn.wq_b.weight.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99

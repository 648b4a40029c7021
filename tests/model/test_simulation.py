"""`simulate_kv_quant` puts the cached KV in the deployed formats; `simulate_act_quant` rounds the inputs of the
GEMMs whose weight is FP8 or FP4, as the reference's linear() does."""

import re

import pytest
import torch
import torch.nn.functional as F

from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_
from dsv4.model.linear import Linear
from dsv4.model.quant import fp8_round

CONFIG = preset("test").replace(index_topk=1024)


def _on_grid(x: torch.Tensor, block: int, fmt) -> bool:
    """Every block of the last dim is (power-of-two scale) x (values of the format)."""
    blocks = x.float().unflatten(-1, (-1, block))
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = torch.exp2(torch.ceil(torch.log2(amax / fmt)))  # the only scale that keeps amax in range
    q = blocks / scale
    return bool(torch.equal(q, q.to(torch.float8_e4m3fn).float()) if fmt == 448.0 else
                torch.isin(q.abs(), torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])).all())


def _run(simulate: bool):
    model = init_random_(Transformer(CONFIG.replace(simulate_kv_quant=simulate), torch.float32), seed=8)
    cache = model.new_cache(1, 300)
    ids = torch.randint(0, CONFIG.vocab_size, (1, 300), generator=torch.Generator().manual_seed(9))
    return model(ids, cache=cache), cache


def test_kv_formats_are_simulated_by_default_and_switch_off():
    logits, cache = _run(True)
    csa = cache.layers[1]
    assert _on_grid(csa.window[..., :448], 64, 448.0) and not _on_grid(csa.window[..., 448:], 64, 448.0)
    assert _on_grid(csa.compressor.entries[:, :75, :448], 64, 448.0)
    assert _on_grid(cache.layers[2].compressor.entries[:, :2, :448], 64, 448.0)
    assert _on_grid(csa.indexer.entries[:, :75], 32, 6.0)
    plain_logits, plain = _run(False)
    assert not _on_grid(plain.layers[1].window[..., :448], 64, 448.0)
    assert not _on_grid(plain.layers[1].indexer.entries[:, :75], 32, 6.0)
    assert 1e-4 < (logits - plain_logits).abs().max() < 0.5  # a small, real perturbation


def test_kv_rope_dims_are_bf16_as_the_deployed_cache_stores_them():
    _, cache = _run(True)
    for entries in (cache.layers[0].window, cache.layers[1].compressor.entries[:, :75],
                    cache.layers[2].compressor.entries[:, :2]):
        rope = entries[..., 448:]
        assert torch.equal(rope, rope.bfloat16().float()) and rope.abs().min() > 0
    model = init_random_(Transformer(CONFIG.replace(simulate_kv_rope_bf16=False), torch.float32), seed=8)
    cache = model.new_cache(1, 8)
    model(torch.arange(8)[None], cache=cache)
    rope = cache.layers[0].window[:, :8, 448:]
    assert not torch.equal(rope, rope.bfloat16().float())  # float32 values, as the reference run in float32


def test_act_quant_rounds_the_gemm_input_to_fp8_blocks():
    linear = Linear(256, 64, torch.float32, act_quant=True)
    torch.nn.init.normal_(linear.weight)
    x = torch.randn(3, 256)
    assert torch.equal(linear(x), F.linear(fp8_round(x, 128), linear.weight))
    assert not torch.equal(linear(x), F.linear(x, linear.weight))


# The reference's linear() rounds the input exactly when the weight is FP8/FP4. Compressor wkv/wgate (fp32),
# indexer weights_proj (bf16), wo_a (dequantized to bf16 by convert.py, an einsum), the gate and the head never.
QUANTIZABLE = r"(attn\.(wq_a|wq_b|wkv|wo_b)|indexer\.wq_b|shared_experts\.w[123]|e_proj|h_proj)$"
ROUTED = r"\.experts\.\d+\.w[123]$"


def _rounding(config) -> dict[str, bool]:
    with torch.device("meta"):
        model = Transformer(config, torch.float32)
    return {name: m.act_quant for name, m in model.named_modules() if isinstance(m, Linear)}


@pytest.mark.parametrize("dtype, expert_dtype", [("fp8", "fp4"), ("fp8", None), ("bf16", None), ("bf16", "fp4")])
def test_act_quant_follows_the_weight_format(dtype, expert_dtype):
    config = CONFIG.replace(dtype=dtype, expert_dtype=expert_dtype)
    rounding = _rounding(config)
    expected = {name: (bool(re.search(QUANTIZABLE, name)) and dtype == "fp8")
                or (bool(re.search(ROUTED, name)) and config.expert_format in ("fp8", "fp4")) for name in rounding}
    assert rounding == expected
    assert any(rounding.values()) == (dtype == "fp8" or expert_dtype == "fp4")
    assert not any(_rounding(config.replace(simulate_act_quant=False)).values())  # the speed switch


def test_fp8_checkpoints_round_by_default():
    rounding = _rounding(CONFIG)  # the presets are FP8 with FP4 experts, like the release
    assert rounding["layers.0.attn.wq_a"] and rounding["layers.0.ffn.experts.0.w2"]
    assert not rounding["layers.1.attn.compressor.wkv"] and not rounding["layers.1.attn.indexer.weights_proj"]

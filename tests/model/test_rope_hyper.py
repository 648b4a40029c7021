"""RoPE/YaRN against HF's rope utilities; hyper-connection Sinkhorn invariants."""

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from dsv4.model import preset
from dsv4.model.hyper import hc_pre
from dsv4.model.rope import Rope

from .hf_oracle import hf_config

CONFIG = preset("v4-flash")


def test_yarn_frequencies_match_hf_compress_rope():
    hf = hf_config(CONFIG.replace(vocab_size=512, n_layers=4, compress_ratios=(0, 4, 128, 4, 0)))
    expected, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf, layer_type="compress")
    ours = Rope(CONFIG, compressed=True).inv_freq()
    assert attention_factor == 1.0
    assert torch.allclose(ours, expected, rtol=1e-6, atol=0)
    plain = Rope(CONFIG, compressed=False).inv_freq()
    assert torch.allclose(plain, 1.0 / 10000 ** (torch.arange(0, 64, 2) / 64))
    assert not torch.allclose(ours, plain)


def test_rope_rotates_pairs_and_inverse_undoes_it():
    rope = Rope(CONFIG, compressed=True)
    x = torch.randn(2, 7, 3, 512, dtype=torch.float64)
    pos = torch.arange(100, 107)
    y = rope(x, pos)
    assert torch.equal(y[..., :448], x[..., :448])
    # pair (0,1) of the rope slice at position p rotates by p * inv_freq[0]
    angle = 100 * rope.inv_freq()[0].double()
    a, b = x[0, 0, 0, 448], x[0, 0, 0, 449]
    assert torch.allclose(y[0, 0, 0, 448:450], torch.stack([a * angle.cos() - b * angle.sin(),
                                                            a * angle.sin() + b * angle.cos()]), atol=1e-5)
    assert torch.allclose(rope(y, pos, inverse=True), x, atol=1e-5)


def test_hyper_connection_matches_hf():
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4HyperConnection

    hf = DeepseekV4HyperConnection(hf_config(preset("test").replace(index_topk=1024)))
    with torch.no_grad():
        hf.fn.copy_(torch.randn_like(hf.fn) * 0.05)
        hf.base.copy_(torch.randn_like(hf.base))
        hf.scale.copy_(torch.rand(3) + 0.5)
    x = torch.randn(2, 5, 4, 128)
    post, comb, collapsed = hf(x)
    y, our_post, our_comb = hc_pre(x, hf.fn, hf.scale, hf.base, 1e-6, 20, 1e-6)
    assert torch.allclose(y, collapsed, atol=1e-5)
    assert torch.allclose(our_post, post, atol=1e-6) and torch.allclose(our_comb, comb, atol=1e-6)
    assert torch.allclose(our_comb.sum(-2), torch.ones(2, 5, 4), atol=1e-4)  # columns normalized last


def test_the_compiled_forms_of_rope_and_sinkhorn_equal_the_eager_ones(monkeypatch):
    """Inside torch.compile RoPE is written in real arithmetic and Sinkhorn with plain sums (forms inductor fuses);
    run here eagerly by pretending to compile, they agree with the eager forms to float32 roundoff."""
    torch.manual_seed(0)
    rope, x = Rope(CONFIG, compressed=True), torch.randn(2, 5, 3, 512)
    pos = torch.tensor([[7, 300, 4096, 65536, 1 << 20]] * 2)
    hx, fn = torch.randn(2, 3, 4, 64), torch.randn(24, 256) * 0.1
    scale, base = torch.tensor([0.5, 0.7, 0.9]), torch.randn(24) * 0.1
    eager = [rope(x, pos), rope(x, pos, inverse=True), rope(x[:, :, 0], pos)] + list(hc_pre(hx, fn, scale, base,
                                                                                         1e-6, 20, 1e-6))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    compiled = [rope(x, pos), rope(x, pos, inverse=True), rope(x[:, :, 0], pos)] + list(hc_pre(hx, fn, scale, base,
                                                                                            1e-6, 20, 1e-6))
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

"""Checkpoints in the released format load back to exactly the dequantized weights; mismatches are named."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsv4.model import Transformer, load_model, preset
from dsv4.model.checkpoint import CheckpointError
from dsv4.model.init import init_random_
from dsv4.model.writer import write_checkpoint

CONFIG = preset("test")
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _dequant_fp8(w, s):  # independent: 128x128 blocks of one power-of-two scale each
    out = w.float().clone()
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            out[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] *= s[i, j].float()
    return out


def _dequant_fp4(packed, s):  # independent: nibble table lookup, low nibble = first element
    b = packed.view(torch.uint8).long()
    vals = torch.tensor(E2M1)[torch.stack([b & 15, b >> 4], -1)].flatten(-2)
    return vals * s.float().repeat_interleave(32, -1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = init_random_(Transformer(CONFIG, torch.float32), seed=3)
    return model, write_checkpoint(tmp_path_factory.mktemp("ckpt"), model)


def test_released_layout_names_and_dtypes(checkpoint):
    _, path = checkpoint
    tensors = load_file(path / "model.safetensors")
    assert tensors["layers.1.attn.wq_a.weight"].dtype == torch.float8_e4m3fn
    assert tensors["layers.1.attn.wq_a.scale"].dtype == torch.float8_e8m0fnu
    assert tensors["layers.1.attn.wq_a.scale"].shape == (1, 1)
    assert tensors["layers.1.ffn.experts.3.w2.weight"].dtype == torch.int8
    assert tensors["layers.1.ffn.experts.3.w2.weight"].shape == (128, 64)
    assert tensors["layers.1.ffn.experts.3.w2.scale"].shape == (128, 4)
    assert tensors["layers.1.attn.indexer.compressor.wkv.weight"].dtype == torch.bfloat16
    assert tensors["layers.0.ffn.gate.tid2eid"].dtype == torch.int32
    assert tensors["layers.2.hc_attn_fn"].dtype == torch.float32
    assert tensors["mtp.0.e_proj.scale"].dtype == torch.float8_e8m0fnu
    assert "embed.weight" in tensors and "hc_head_fn" in tensors and "layers.1.ffn.gate.bias" in tensors
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] == 128 and config["compress_ratios"] == [0, 4, 128, 4, 0]
    assert config["quantization_config"]["weight_block_size"] == [128, 128]


def test_load_reproduces_dequantized_weights_exactly(checkpoint):
    model, path = checkpoint
    tensors = load_file(path / "model.safetensors")
    loaded = load_model(path, dtype=torch.float32)
    n_fp8 = n_fp4 = 0
    for name, p in loaded.named_parameters():
        stored = tensors[name]
        scale = tensors.get(name.removesuffix(".weight") + ".scale")
        if stored.dtype == torch.float8_e4m3fn:
            expected, n_fp8 = _dequant_fp8(stored, scale), n_fp8 + 1
        elif stored.dtype == torch.int8:
            expected, n_fp4 = _dequant_fp4(stored, scale), n_fp4 + 1
        else:
            expected = stored.to(p.dtype)
        assert torch.equal(p, expected.to(p.dtype)), name
        # and the stored values are a faithful encoding of the original weights
        assert torch.allclose(p.float(), model.get_parameter(name).float(), rtol=0.3, atol=0.3), name
    assert n_fp8 > 20 and n_fp4 == 3 * 8 * 5  # 3 matrices x 8 experts x (4 layers + MTP)


def test_hf_side_spellings_shards_and_shared_mtp_copies_are_accepted(checkpoint, tmp_path):
    _, path = checkpoint
    tensors = load_file(path / "model.safetensors")
    renamed = {}
    for k, v in tensors.items():
        k = k.replace(".attn.", ".self_attn.").replace(".ffn.", ".mlp.")
        k = k.replace("gate.bias", "gate.e_score_correction_bias")
        renamed["model." + (k.removesuffix(".scale") + ".weight_scale_inv" if k.endswith(".scale") else k)] = v
    renamed["mtp.0.embed.weight"] = tensors["embed.weight"]  # a shared copy, skipped like convert.py does
    keys = sorted(renamed)
    save_file({k: renamed[k] for k in keys[::2]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: renamed[k] for k in keys[1::2]}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    a, b = load_model(path, dtype=torch.float32), load_model(tmp_path, dtype=torch.float32)
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(x, y), name


def _broken(path, tmp_path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    return tmp_path


def test_errors_name_missing_unexpected_and_misshaped_tensors(checkpoint, tmp_path):
    _, path = checkpoint
    bad = _broken(path, tmp_path, lambda t: (t.pop("layers.2.attn.wkv.weight"), t.update(extra=torch.ones(1))))
    with pytest.raises(CheckpointError, match=r"missing layers\.2\.attn\.wkv\.weight; unexpected extra"):
        load_model(bad)
    bad = _broken(path, tmp_path, lambda t: t.update({"layers.0.attn_norm.weight": torch.ones(7)}))
    with pytest.raises(CheckpointError, match=r"layers\.0\.attn_norm\.weight: expected shape \(128,\)"):
        load_model(bad)
    bad = _broken(path, tmp_path, lambda t: t.pop("layers.1.attn.wq_b.scale"))
    with pytest.raises(CheckpointError, match=r"layers\.1\.attn\.wq_b\.weight: quantized weight"):
        load_model(bad)

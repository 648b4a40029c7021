"""ModelConfig reads the released config files (HF and reference key names) into the presets."""

import json
from pathlib import Path

import pytest

from dsv4.model import ModelConfig, preset

DATA = Path(__file__).parent / "data"  # verbatim copies of the released config.json / inference/config.json


@pytest.mark.parametrize("name", ["v4-flash", "v4-pro"])
@pytest.mark.parametrize("kind", ["config", "inference_config"])
def test_released_config_files_equal_presets(name, kind):
    config = ModelConfig.from_file(DATA / f"{name.replace('-', '_')}_{kind}.json")
    assert config == preset(name)
    assert config.simulate_kv_quant is True  # the reference simulates the deployed KV formats


def test_preset_values():
    flash, pro = preset("v4-flash"), preset("v4-pro")
    assert [flash.layer_kind(i) for i in (0, 1, 2, 3, 42, 43)] == ["window", "window", "csa", "hca", "csa", "window"]
    assert [pro.layer_kind(i) for i in (0, 1, 2, 3, 60, 61)] == ["hca", "hca", "csa", "hca", "csa", "window"]
    def key(c):
        return c.dim, c.n_heads, c.q_lora_rank, c.index_topk, c.route_scale

    assert key(flash) == (4096, 64, 1024, 512, 1.5)
    assert key(pro) == (7168, 128, 1536, 1024, 2.5)
    assert pro.o_groups == 16 and pro.n_routed_experts == 384 and pro.moe_inter_dim == 3072


def test_hf_dict_round_trip_and_released_keys():
    d = preset("v4-flash").to_hf_dict()
    released = json.loads((DATA / "v4_flash_config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "compress_ratios", "rope_scaling", "quantization_config",
                "sliding_window", "num_hash_layers", "expert_dtype", "routed_scaling_factor"):
        assert d[key] == released[key], key
    assert ModelConfig.from_dict(d) == preset("v4-flash")


@pytest.mark.parametrize("change, message", [
    ({"compress_ratios": (0, 4, 128, 4)}, "compress_ratios has 4 entries; expected n_layers \\+ n_mtp_layers = 5"),
    ({"compress_ratios": (0, 4, 64, 4, 0)}, "compress_ratios values must be in \\(0, 4, 128\\); got \\[64\\]"),
    ({"o_groups": 3}, "n_heads=2 must be divisible by o_groups=3"),
    ({"n_activated_experts": 9}, "n_activated_experts=9 exceeds n_routed_experts=8"),
    ({"score_func": "relu"}, "score_func must be .*; got 'relu'"),
])
def test_invalid_values_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        preset("test").replace(**change)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="unknown config key 'n_experts'"):
        ModelConfig.from_dict({**preset("test").to_dict(), "n_experts": 3})

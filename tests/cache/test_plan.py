"""The KV plan: figures of model.md §3.3 printed by `dsv4 kv-plan`, and the plan's arithmetic."""

import re

import pytest

from dsv4.cache.plan import KVPlan, estimate_weight_bytes, gqa_bytes_per_token, v32_bytes_per_token
from dsv4.cli import main
from dsv4.model import preset
from dsv4.model.summary import kv_bytes_per_token


def _kv_plan(capsys, *args) -> str:
    assert main(["kv-plan", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name, bpt, bf16, v32_pct, flops_pct", [
    ("v4-flash", "3,514", "6,880", "7.3%", "10.0%"),
    ("v4-pro", "5,031", "9,848", "10.5%", "26.5%"),
])
def test_kv_plan_prints_the_published_figures(capsys, name, bpt, bf16, v32_pct, flops_pct):
    out = _kv_plan(capsys, name)
    assert f"total: {bpt} B/token" in out
    assert f"BF16 reference buffers: {bf16} B/token" in out
    assert f"this model is {v32_pct} of V3.2" in out
    assert "this model is 2.0% of GQA-8 bf16" in out
    assert f"{flops_pct} in FP8-equivalent FLOPs" in out
    assert "48,068 B/token" in out
    assert "method:" in out


def test_plan_agrees_with_the_model_summary_and_the_spec_table():
    # model.md §3.3: deployed / BF16 bytes per token, V3.2 and GQA-8 baselines, fixed per-request parts
    for name, deployed, state_mib in (("v4-flash", 3514.25, 11.64), ("v4-pro", 5031.4375, 17.84)):
        config = preset(name)
        plan = KVPlan(config)
        ref = kv_bytes_per_token(config)
        assert plan.bytes_per_token() == deployed == ref["deployed"]
        assert plan.bf16_reference_bytes_per_token() == ref["bf16_reference"]
        assert plan.window_bytes() == ref["window_per_sequence"]
        assert round(plan.state_bytes() / 2**20, 2) == state_mib
    assert v32_bytes_per_token() == 48068
    assert gqa_bytes_per_token(61) == 249856 and gqa_bytes_per_token(43) == 176128


def test_requests_that_fit():
    plan = KVPlan(preset("v4-flash"))
    per = plan.request_bytes(1 << 20)
    assert per == (1 << 20) * 3514.25 + plan.fixed_bytes()
    assert plan.requests_that_fit(1 << 20, 100 * per + 7, 0) == 100
    assert plan.requests_that_fit(1 << 20, 10 * per + 5e9, 5e9) == 10
    assert plan.requests_that_fit(1 << 20, 1e9, 2e9) == 0


def test_decode_flops_by_hand():
    # the test preset: 4 layers W C H C (window 128, top-64, 4 indexer heads), at 1024 tokens of context
    config = preset("test")
    f = KVPlan(config).decode_flops(1024, active_params=1e6)
    per_key = 2 * config.n_heads * 2 * config.head_dim
    keys = 128 + (128 + 64) + (128 + 8) + (128 + 64)
    assert f.attention == per_key * keys
    assert f.indexer == 2 * (2 * 4 * 128 * 256)
    assert f.weighted == 2e6 + 2 * f.attention + 0.5 * f.indexer


def test_weight_estimate_matches_the_released_sizes():
    # released safetensors: V4-Flash ~160 GB, V4-Pro ~865 GB (FP4 experts, FP8 elsewhere, BF16 embed/head)
    assert 150e9 < estimate_weight_bytes(preset("v4-flash")) < 170e9
    assert 840e9 < estimate_weight_bytes(preset("v4-pro")) < 890e9


def test_kv_plan_of_a_checkpoint_dir_uses_its_files(capsys, tmp_path):
    assert main(["init-checkpoint", "--preset", "test", str(tmp_path)]) == 0
    capsys.readouterr()
    out = _kv_plan(capsys, str(tmp_path), "--context", "1000,2000")
    assert "(safetensors files)" in out
    assert re.search(r"^\s+1,000\s", out, re.M) and re.search(r"^\s+2,000\s", out, re.M)
    with pytest.raises(SystemExit, match="neither a preset"):
        main(["kv-plan", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="--context: 'x'"):
        main(["kv-plan", "test", "--context", "x"])

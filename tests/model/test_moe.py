"""The MoE's compiled form (`MoE._grouped`: pairs sorted by expert, products by `grouped_linear` on the stacked
bank) against the eager per-expert loop."""

import pytest
import torch

from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_
from dsv4.model.moe import grouped_linear, grouped_mm


@pytest.mark.parametrize("act_quant", [False, True])
def test_grouped_experts_equal_the_eager_loop_bit_for_bit(act_quant):
    config = preset("test").replace(simulate_act_quant=act_quant)
    model = init_random_(Transformer(config, torch.float32), seed=4).eval()
    moe = model.layers[1].ffn  # a score-routed layer (layer 0 routes by token hash)
    moe.stack_experts()
    x = torch.randn(7, config.dim, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(7)
    with torch.no_grad():
        want = moe(x[:, None], ids[:, None])[:, 0]
        weights, indices = moe.gate(x, ids)
        assert len(indices.unique()) > 2  # several experts, some shared by tokens
        got = (moe._grouped(x, weights, indices) + moe.shared_experts(x).float()).to(x.dtype)
    assert torch.equal(got, want)


def test_grouped_linear_multiplies_each_run_by_its_matrix():
    weight = torch.randn(4, 3, 5)
    x = torch.randn(6, 5)
    groups = torch.tensor([0, 0, 2, 3, 3, 3])
    want = torch.stack([weight[g] @ row for g, row in zip(groups.tolist(), x, strict=True)])
    torch.testing.assert_close(grouped_linear(x, weight, groups), want)


def test_grouped_mm_is_grouped_linear_with_no_host_read():
    # the MoE's GPU path: the same products (float32 here, on CPU), and traced whole with no graph break, which a
    # host read (.tolist(), .item()) would cause: what a CUDA graph needs to capture the step
    g = torch.Generator().manual_seed(2)
    weight, x = torch.randn(6, 8, 16, generator=g), torch.randn(9, 16, generator=g)
    groups = torch.tensor([0, 0, 2, 3, 3, 3, 3, 5, 5])  # experts 1 and 4 have no rows
    want = grouped_linear(x, weight, groups)
    assert torch.equal(grouped_mm(x, weight, groups), want)
    traced = torch.compile(grouped_mm, fullgraph=True, backend="eager", dynamic=False)
    half = x.bfloat16(), weight.bfloat16()  # (its tracing takes BF16 only, as a GPU runs it)
    assert torch.equal(traced(*half, groups), grouped_mm(*half, groups))

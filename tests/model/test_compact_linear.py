import pytest
import torch

from dsv4 import kernels
from dsv4.model.linear import Linear, linear


def _linear(weight: torch.Tensor) -> Linear:
    lin = Linear(weight.size(1), weight.size(0), torch.float32)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def test_compact_keeps_exact_weights_only():
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(8, 32, generator=g).bfloat16().float()  # values BF16 holds (as FP8 / FP4 ones)
    lin = _linear(exact)
    assert lin.compact_() and lin.weight.dtype == torch.bfloat16 and torch.equal(lin.weight.float(), exact)
    assert not lin.compact_()  # already compact
    full = _linear(torch.randn(8, 32, generator=g))  # float32 mantissas: BF16 would round them
    assert not full.compact_() and full.weight.dtype == torch.float32


@pytest.mark.parametrize("rows", [1, 40])  # the streaming kernel (decode rows), and a float32 copy (prefill)
def test_a_compact_linear_computes_the_float32_product(rows):
    kernels.enable()
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(24, 256, generator=g).bfloat16().float()
    lin = _linear(weight)
    x = torch.randn(2, rows, 256, generator=g)
    want = lin(x)
    assert lin.compact_()
    got = lin(x)
    assert got.dtype == torch.float32 and got.shape == (2, rows, 24)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x, lin.weight), want, rtol=1e-5, atol=1e-5)

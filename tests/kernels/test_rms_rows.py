"""rms_rows.cpp: the per-head query norm in one visit of each row, against torch's rms_norm (float32 roundoff)."""

import pytest
import torch
import torch.nn.functional as F

from dsv4 import kernels
from dsv4.model.norm import rms_normalize


@pytest.fixture(scope="module")
def ops():
    if not kernels.enable():
        pytest.fail("the C++ kernels did not build (is a C++ compiler installed?)")
    return torch.ops.dsv4_cpu


@pytest.mark.parametrize("shape", [(3, 7, 4, 512), (5, 24), (2, 1, 100)])  # 16-lane rows, scalar rows
def test_rows_normalized_as_torch_does(ops, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, shape[-1])
    got, want = ops.rms_rows(x, 1e-6), F.rms_norm(x, (shape[-1],), None, 1e-6)
    assert got.shape == x.shape and torch.allclose(got, want, rtol=2e-6, atol=0)
    assert torch.equal(ops.rms_rows(x[:1], 1e-6), got[:1])  # a row's value whatever thread and batch computed it
    assert torch.equal(ops.rms_rows(torch.zeros(2, 16), 1e-6), torch.zeros(2, 16))  # eps keeps zeros finite


def test_rms_normalize_takes_it_without_autograd_only(ops):
    x = torch.randn(4, 2, 512, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with torch.no_grad():
        fast = rms_normalize(x, 1e-6)
    slow = rms_normalize(x, 1e-6)  # autograd: torch's op, with its backward
    slow.sum().backward()
    assert x.grad is not None and torch.allclose(fast, slow.detach(), rtol=2e-6, atol=0)
    assert torch.equal(fast, ops.rms_rows(x.detach(), 1e-6))


def test_bad_input_is_named(ops):
    with pytest.raises(RuntimeError, match=r"rms_rows: x must be float32"):
        ops.rms_rows(torch.randn(2, 8, dtype=torch.float64), 1e-6)

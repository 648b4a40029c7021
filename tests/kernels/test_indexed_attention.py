"""indexed_attention.cpp: prefill's attention to each query's own keys, read in place from a table of distinct
rows, against the Python path's copies and einsums (float32 roundoff), and the same values on every thread."""

import pytest
import torch

from dsv4 import kernels
from dsv4.model.attention.sparse import OwnKeys, gathered_sink_attention


@pytest.fixture(scope="module")
def ops():
    if not kernels.enable():
        pytest.fail("the C++ kernels did not build (is a C++ compiler installed?)")
    return torch.ops.dsv4_cpu


def _case(n, heads, dim, t, u, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, heads, dim, generator=g), torch.randn(u, dim, generator=g),
            torch.randint(0, u, (n, t), generator=g), torch.rand(n, heads, t, generator=g))


# 4 heads: one pass of four; 5: four and one; 2: a short pass; dims 512 (vector loops), 24 and 80 (the scalar
# loops: not whole 16- or 64-dim chunks)
@pytest.mark.parametrize("heads, dim", [(4, 512), (5, 512), (2, 512), (3, 24), (4, 80)])
def test_logits_and_values_as_the_copied_keys_give(ops, heads, dim):
    q, rows, index, p = _case(9, heads, dim, 7, 11)
    keys = rows[index].double()  # [n,t,d]: what the Python path copies out
    want = torch.einsum("nhd,ntd->nht", q.double(), keys)
    bound = torch.einsum("nhd,ntd->nht", q.double().abs(), keys.abs())  # Σ|terms|: float32 rounding
    got = ops.indexed_logits(q, rows, index)
    assert got.shape == want.shape and (got.double() - want).abs().le(bound * 1e-6).all()
    want = torch.einsum("nht,ntd->nhd", p.double(), keys)
    bound = torch.einsum("nht,ntd->nhd", p.double(), keys.abs())
    got = ops.indexed_values(p, rows, index)
    assert got.shape == want.shape and (got.double() - want).abs().le(bound * 1e-6).all()


def test_each_query_as_alone_on_any_thread(ops):
    # the queries are split between threads: each one's values are those it gets alone, bit for bit
    q, rows, index, p = _case(64, 4, 512, 64, 200, seed=1)
    logits, values = ops.indexed_logits(q, rows, index), ops.indexed_values(p, rows, index)
    for i in (0, 17, 63):
        assert torch.equal(logits[i:i + 1], ops.indexed_logits(q[i:i + 1], rows, index[i:i + 1]))
        assert torch.equal(values[i:i + 1], ops.indexed_values(p[i:i + 1], rows, index[i:i + 1]))


def test_a_zero_probability_adds_nothing(ops):
    # masked keys (probability 0) may name any row: the values are those of the listed keys alone
    q, rows, index, p = _case(3, 4, 512, 6, 10, seed=2)
    p[:, :, 3:] = 0
    other = index.clone()
    other[:, 3:] = 9 - other[:, 3:]
    assert torch.equal(ops.indexed_values(p, rows, index), ops.indexed_values(p, rows, other))


def test_bad_input_is_named(ops):
    q, rows, index, p = _case(2, 4, 64, 3, 5)
    with pytest.raises(RuntimeError, match="index 5 is out of range for 5 rows"):
        ops.indexed_logits(q, rows, torch.tensor([[0, 5, 1], [0, 0, 0]]))
    with pytest.raises(RuntimeError, match=r"rows must be float32 \[u, 64\]"):
        ops.indexed_logits(q, rows[:, :32], index)
    with pytest.raises(RuntimeError, match=r"q must be float32"):
        ops.indexed_logits(q.double(), rows, index)
    with pytest.raises(RuntimeError, match=r"index must be \[2, 3\]"):
        ops.indexed_values(p, rows, index[:, :2])


def test_gathered_attention_with_the_kernels_as_without(ops, monkeypatch):
    g = torch.Generator().manual_seed(3)
    q, shared = torch.randn(2, 6, 4, 512, generator=g), torch.randn(2, 9, 512, generator=g)
    shared_mask = torch.rand(2, 6, 9, generator=g) > 0.3
    shared_mask[..., 0] = True
    own = OwnKeys(torch.randn(20, 512, generator=g), torch.randint(0, 20, (2, 6, 5), generator=g),
                  torch.rand(2, 6, 5, generator=g) > 0.3)
    sink = torch.randn(4, generator=g)
    fast = gathered_sink_attention(q, shared, shared_mask, own, sink, 512**-0.5)
    monkeypatch.setattr(kernels, "op", lambda name, on=None: None)  # the Python path
    slow = gathered_sink_attention(q, shared, shared_mask, own, sink, 512**-0.5)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-5)

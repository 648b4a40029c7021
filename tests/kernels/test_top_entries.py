"""dsv4_cpu::top_entries (the indexer's top-k) against torch.topk over the masked scores, and `indexer.ranked`'s
C++ and Python paths against each other where scores tie."""

import pytest
import torch

from dsv4 import kernels
from dsv4.model.attention import indexer


@pytest.fixture(scope="module")
def ops():
    if not kernels.enable():
        pytest.fail("the C++ kernels did not build (is a C++ compiler installed?)")
    return torch.ops.dsv4_cpu


def reference(scores: torch.Tensor, n: torch.Tensor, k: int) -> torch.Tensor:
    visible = torch.arange(scores.size(1)) < n[:, None]
    top = scores.masked_fill(~visible, float("-inf")).topk(min(k, scores.size(1)), dim=-1)
    return top.indices.masked_fill(top.values == float("-inf"), -1)


@pytest.mark.parametrize("t, k", [(16384, 64), (1000, 64), (70, 64), (64, 64), (37, 64), (5000, 512), (33, 1)])
def test_top_entries_as_topk_of_the_masked_scores(ops, t, k):
    g = torch.Generator().manual_seed(t + k)
    scores = torch.randn(4, t, generator=g) * 10  # distinct scores: torch.topk's order is the only order
    n = torch.tensor([t, t // 2, min(t, 3), 0])
    got = ops.top_entries(scores, n, k)
    assert torch.equal(got, reference(scores, n, k))


def test_rising_scores_reach_every_part_of_the_scan(ops):
    # each new score beats the bar: every entry enters the heap, through the 16-wide compare and the scalar tail
    scores = torch.arange(1000, dtype=torch.float32)[None]
    got = ops.top_entries(scores, torch.tensor([1000]), 8)
    assert got.tolist() == [list(range(999, 991, -1))]


def test_equal_scores_keep_the_lower_entry_numbers(ops):
    # ReLU leaves many scores at exactly 0: which of them are kept is fixed, not torch.topk's choice
    scores = torch.zeros(1, 300)
    scores[0, 250] = 2.0
    scores[0, 100] = 1.0
    got = ops.top_entries(scores, torch.tensor([300]), 5)
    assert got.tolist() == [[250, 100, 0, 1, 2]]


def test_nan_and_minus_inf_scores_are_never_picked(ops):
    scores = torch.tensor([[float("nan"), 1.0, float("-inf"), 3.0, float("nan")]])
    got = ops.top_entries(scores, torch.tensor([5]), 4)
    assert got.tolist() == [[3, 1, -1, -1]]


def test_counts_past_the_row_are_clamped(ops):
    scores = torch.tensor([[1.0, 2.0, 0.5]])
    assert ops.top_entries(scores, torch.tensor([7]), 2).tolist() == [[1, 0]]
    assert ops.top_entries(scores, torch.tensor([-1]), 2).tolist() == [[-1, -1]]


def test_bad_input_is_named(ops):
    with pytest.raises(RuntimeError, match=r"scores must be float32 \[b, t\]"):
        ops.top_entries(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([1, 1]), 2)
    with pytest.raises(RuntimeError, match=r"counts must be \[2\]"):
        ops.top_entries(torch.zeros(2, 3), torch.tensor([1]), 2)
    with pytest.raises(RuntimeError, match="k must be >= 0"):
        ops.top_entries(torch.zeros(2, 3), torch.tensor([1, 1]), -1)


def test_ranked_takes_one_rule_through_the_op_and_without_it(ops, monkeypatch):
    # ReLU-like scores: a third exactly 0, more than k - 600 of them, so which zeros are kept decides the selection
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 7, 900, generator=g).clamp(min=-0.5).relu()
    n = torch.tensor([900, 400, 20])
    fused = (indexer.ranked(scores[:, 0], 700, n), indexer.ranked(scores, 700))
    monkeypatch.setattr(kernels, "op", lambda name, on=None: None)  # the Python path: a stable sort
    plain = (indexer.ranked(scores[:, 0], 700, n), indexer.ranked(scores, 700))
    for a, b in zip(fused, plain, strict=True):
        assert torch.equal(a, b)
    assert fused[0][2].tolist()[20:] == [-1] * 680  # past a row's count: nothing
    picked, row = fused[1][0, 0], scores[0, 0]
    assert row[picked].tolist() == sorted(row[picked].tolist(), reverse=True)  # best first
    zeros = picked[row[picked] == 0]
    assert zeros.tolist() == (row == 0).nonzero()[:len(zeros), 0].tolist()  # of equal scores the lowest, in order


def test_ranked_without_the_op_keeps_the_k_best(monkeypatch):
    monkeypatch.setattr(kernels, "op", lambda name, on=None: None)
    scores = torch.tensor([[0.5, float("nan"), 2.0, 0.5, float("-inf"), 0.5, 1.0]])
    assert indexer.ranked(scores, 4).tolist() == [[2, 6, 0, 3]]  # 2.0, 1.0 and the first two of the three 0.5s
    assert indexer.ranked(scores, 7).tolist() == [[2, 6, 0, 3, 5, -1, -1]]  # never NaN or -inf
    assert indexer.ranked(scores, 4, torch.tensor([4])).tolist() == [[2, 0, 3, -1]]  # the first 4 compete

"""Format simulation against brute-force oracles built from the formats' bit layouts."""

import math

import pytest
import torch

from dsv4.model.quant import fp4_codes, fp4_grid_round, fp4_round, fp4_values, fp8_round, fp8_to_float, hadamard


def _nearest_even(values: list[float], codes: list[int], v: float) -> float:
    """Round v to the nearest representable value, ties to the even code (mantissa lsb 0)."""
    best = min(abs(x - v) for x in values)
    cands = [(c, x) for c, x in zip(codes, values, strict=True) if abs(x - v) == best]
    return min(cands, key=lambda cx: (cx[0] & 1, cx[0]))[1]


def _e4m3_table():
    vals = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().tolist()
    pairs = [(c, v) for c, v in enumerate(vals) if math.isfinite(v)]
    return [v for _, v in pairs], [c for c, _ in pairs]


def _e2m1_table():
    # e2m1: sign, 2 exponent bits (bias 1), 1 mantissa bit; exponent 0 is subnormal
    out = []
    for code in range(16):
        e, m = (code >> 1) & 3, code & 1
        mag = (m / 2) if e == 0 else (1 + m / 2) * 2.0 ** (e - 1)
        out.append(-mag if code & 8 else mag)
    return out, list(range(16))


def _oracle(x: torch.Tensor, block: int, fmt_max: float, floor: float, table) -> torch.Tensor:
    values, codes = table
    out = []
    for row in x.tolist():
        for i in range(0, len(row), block):
            blk = row[i:i + block]
            amax = max(max(abs(v) for v in blk), floor)
            scale = 2.0 ** math.ceil(math.log2(amax / fmt_max))
            out += [_nearest_even(values, codes, max(-fmt_max, min(fmt_max, v / scale))) * scale for v in blk]
    return torch.tensor(out).view(x.shape)


@pytest.mark.parametrize("block", [64, 128])
def test_fp8_round_matches_bitwise_oracle(block):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 256, generator=g) * torch.logspace(-3, 3, 6)[:, None]
    x[0, :block] = 0.0  # all-zero block: the 1e-4 amax floor
    x[1, 5] = 448.0 * 2**-4  # exact power-of-two block maximum
    assert torch.equal(fp8_round(x, block), _oracle(x, block, 448.0, 1e-4, _e4m3_table()))


def test_fp4_round_matches_bitwise_oracle_including_ties():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 128, generator=g) * 3
    x[0, :8] = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])  # ties at scale 1
    x[0, 8:32] = 0.1
    expected = _oracle(x, 32, 6.0, 6.0 * 2**-126, _e2m1_table())
    assert torch.equal(fp4_round(x, 32), expected)
    assert x[0, :8].tolist() != expected[0, :8].tolist()  # the ties did get rounded


def test_fp4_grid_rounding_and_codes_match_the_oracle_on_a_dense_grid():
    x = torch.arange(-6 * 2**9, 6 * 2**9 + 1) / 2**9  # every multiple of 2^-9 in [-6, 6]: all ties included
    values, codes = _e2m1_table()
    expected = torch.tensor([_nearest_even(values, codes, v) for v in x.tolist()])
    assert torch.equal(fp4_grid_round(x), expected)
    assert torch.equal(fp4_values(fp4_codes(x)).float(), expected)
    minus_zero = torch.tensor([8, 0], dtype=torch.uint8)  # -0.1 rounds to -0 and keeps its sign
    assert torch.equal(fp4_codes(torch.tensor([-0.1, 0.1])), minus_zero)


def test_fp8_table_decodes_every_byte_as_torch_does():
    codes = torch.arange(256, dtype=torch.uint8)
    expected = codes.view(torch.float8_e4m3fn).float()
    got = fp8_to_float(codes)
    assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.nan_to_num(), expected.nan_to_num())
    square = fp8_to_float(codes.view(torch.float8_e4m3fn).view(16, 16))  # fp8 values in, shape kept
    assert torch.equal(square.nan_to_num(), got.view(16, 16).nan_to_num())


def test_hadamard_matches_sylvester_matrix():
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < 128:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    x = torch.randn(3, 5, 128, dtype=torch.float64)
    assert torch.allclose(hadamard(x), x @ h.T / math.sqrt(128), atol=1e-12)


def test_a_lookup_table_first_needed_inside_a_compiled_graph_is_an_error():
    """Tables are built before tracing (`build_tables`): traced, one would be rebuilt by the graph at every call."""
    f = torch.compile(hadamard, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match="build_tables"):
        f(torch.ones(2, 4, dtype=torch.float64))  # (no float64 matrix of size 4 built)
    x = torch.ones(2, 4, dtype=torch.float64)
    want = hadamard(x)  # built eagerly: then read by the graph
    torch.testing.assert_close(f(x), want)

"""The C++ CPU kernels (dsv4.kernels) against the Python ops they stand in for: the same values bit for bit (the
fused indexer scores: the same sums to float32 rounding), the same errors for bad input."""

import pytest
import torch

from dsv4 import kernels
from dsv4.cache.layout import IndexerKeyLayout, MainEntryLayout, gather_index_keys, gather_main_entries
from dsv4.cache.views import put_rows
from dsv4.model.attention.indexer import index_scores
from dsv4.model.hyper import sinkhorn_split
from dsv4.model.moe import grouped_linear
from dsv4.model.quant import fp4_round


@pytest.fixture(scope="module")
def ops():
    if not kernels.enable():
        pytest.fail("the C++ kernels did not build (is a C++ compiler installed?)")
    return torch.ops.dsv4_cpu


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:  # NaNs and signed zeros compared too
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_main_entries_decode_as_the_python_op(ops):
    layout = MainEntryLayout()
    g = torch.Generator().manual_seed(0)
    # magnitudes from 1e-30 to 1e4 per 64-dim block: tiny scales, FP8 subnormals and the full exponent range
    x = torch.randn(7, 16, 512, generator=g) * torch.logspace(-30, 4, 512)[torch.randperm(512, generator=g)]
    pool = layout.pack(x)
    pool[0, 0, 448 + 128] = 0  # a zero scale byte reads 2**-127
    pool[1, 2, :448] = torch.arange(256, dtype=torch.uint8).repeat(2)[:448]  # every FP8 byte, NaNs included
    for index in (torch.tensor([3]), torch.tensor([[6, 0], [1, 1]]), torch.tensor([], dtype=torch.long)):
        want = gather_main_entries(pool, index, 512, 64, 64)
        assert _bits_equal(ops.gather_main_entries(pool, index, 512, 64, 64), want)
    flat = pool.view(-1, 584)  # a pool of single entries (the paged pool seen entry by entry)
    index = torch.randint(0, flat.size(0), (3, 5), generator=g)
    assert _bits_equal(ops.gather_main_entries(flat, index, 512, 64, 64), gather_main_entries(flat, index, 512, 64, 64))


def test_index_keys_decode_as_the_python_op(ops):
    layout = IndexerKeyLayout()
    g = torch.Generator().manual_seed(1)
    pool = layout.pack(torch.randn(9, 4, 128, generator=g) * torch.logspace(-20, 10, 128))
    pool[2, 1, :64] = torch.arange(256, dtype=torch.uint8)[::4]  # every nibble in both halves
    pool[3, 0, 64] = 0
    index = torch.tensor([[8, 2, 3], [0, 0, 5]])
    assert _bits_equal(ops.gather_index_keys(pool, index, 128, 32), gather_index_keys(pool, index, 128, 32))


# (128, 32), (128, 16), (256, 32): sixteen keys a pass in vector lanes (AVX-512); (128, 64): two scale bytes a key, the
# one-key-at-a-time loop
@pytest.mark.parametrize("dim,block", [(128, 32), (128, 16), (256, 32), (128, 64)])
def test_index_scores_from_packed_keys_as_decode_then_score(ops, dim, block):
    layout = IndexerKeyLayout(dim, block)
    g = torch.Generator().manual_seed(3)
    pool = layout.pack(torch.randn(9, 4, dim, generator=g) * torch.logspace(-3, 3, dim))
    pool[2, 1, :64] = torch.arange(256, dtype=torch.uint8)[::4]  # every nibble in both halves
    pool[3, 0, dim // 2] = 0  # a zero scale byte
    q, w = torch.randn(2, 5, dim, generator=g), torch.randn(2, 5, generator=g)  # 5 heads: a pass of 4, one of 1
    for store, index in ((pool, torch.tensor([[8, 2, 3], [0, 0, 5]])),  # blocks of 4 entries: 12 keys a row
                         (pool.view(-1, layout.nbytes), torch.randint(0, 36, (2, 37), generator=g)),  # 16 + 16 + 5
                         (pool.view(-1, layout.nbytes), torch.tensor([[30, 9], [0, 35]]))):  # single entries
        keys = gather_index_keys(store, index, dim, block).flatten(1, -2)  # [rows, t·per_row, dim]
        want = index_scores(q[:, None], keys, w[:, None])[:, 0]
        got = ops.index_scores_packed(q, w, store, index, dim, block)
        bound = index_scores(q[:, None].abs(), keys.abs(), w[:, None].abs())[:, 0]  # Σ|terms|: float32 rounding
        assert got.shape == want.shape and (got - want).abs().le(bound * 1e-5 + 1e-30).all()
        assert (want != 0).float().mean() > 0.3  # ReLU leaves enough nonzero scores to compare


def _vnni() -> bool:
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    return {"avx512f", "avx512bw", "avx512_vnni"} <= set(flags)


def _block_order_scores(q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_h w·ReLU(q·k) with each 32-dim block's sum exact (float64 holds it), the blocks then added in float32 in
    order: q [rows,h,d], keys [rows,t,d], w [rows,h] -> [rows,t]."""
    blocks = (q.double()[:, :, None] * keys.double()[:, None]).unflatten(-1, (-1, 32)).sum(-1).float()
    dot = blocks[..., 0]
    for b in range(1, blocks.size(-1)):
        dot = dot + blocks[..., b]
    total = torch.zeros(dot.shape[0], dot.shape[2])
    for h in range(dot.size(1)):
        total = total + dot[:, h].relu() * w[:, h, None]
    return total


@pytest.mark.parametrize("dim", [128, 256])
def test_index_scores_of_mxfp4_queries_sum_each_block_exactly(ops, dim):
    # the indexer's queries are MXFP4 (fp4_round): each key block's dot product is an integer sum, exact, then the
    # blocks are added in order. A key whose first block is large and the others small tells that order from a
    # running float sum over every dimension (GroupScorer's), which rounds at each small term.
    layout = IndexerKeyLayout(dim, 32)
    g = torch.Generator().manual_seed(8)
    keys = torch.randn(40, dim, generator=g)
    keys[:, :32] *= 2.0**22
    pool = layout.pack(keys).view(-1, layout.nbytes)
    q = fp4_round(torch.randn(2, 6, dim, generator=g), 32)
    q[1, 2, 32:64] = 0  # a zero block
    w = 2.0 ** torch.randint(-3, 3, (2, 6), generator=g).float()  # powers of two: w·ReLU(dot) exact, FMA or not
    index = torch.randint(0, 40, (2, 29), generator=g)
    decoded = gather_index_keys(pool, index, dim, 32)
    got = ops.index_scores_packed(q, w, pool, index, dim, 32)
    want = index_scores(q[:, None], decoded, w[:, None])[:, 0]
    bound = index_scores(q[:, None].abs(), decoded.abs(), w[:, None].abs())[:, 0]
    assert (got - want).abs().le(bound * 1e-5).all()
    if _vnni():  # the integer path's order, bit for bit
        assert _bits_equal(got, _block_order_scores(q, decoded, w))
    off_grid = q.clone()
    off_grid[0, 0, 0] = 0.3  # one block that is not e2m1 codes x a power of two: the float path scores the row
    got = ops.index_scores_packed(off_grid, w, pool, index, dim, 32)
    bound = index_scores(off_grid[:, None].abs(), decoded.abs(), w[:, None].abs())[:, 0]
    assert (got - index_scores(off_grid[:, None], decoded, w[:, None])[:, 0]).abs().le(bound * 1e-5).all()


@pytest.mark.parametrize("per_row", [4, 1])  # blocks of 4 entries, single entries
def test_index_scores_shared_between_threads_as_alone(ops, per_row):
    # past 4,096 scores a call, pool threads score chunks of keys beside the caller: each score as alone, bit for bit
    layout = IndexerKeyLayout(128, 32)
    g = torch.Generator().manual_seed(4)
    pool = layout.pack(torch.randn(3000 // per_row, per_row, 128, generator=g)).view(-1, per_row, layout.nbytes)
    q, w = torch.randn(2, 4, 128, generator=g), torch.randn(2, 4, generator=g)
    index = torch.randint(0, pool.size(0), (2, 12000 // per_row), generator=g)  # 24,000 scores: shared
    shared = ops.index_scores_packed(q, w, pool, index, 128, 32)
    for row in range(2):
        for a in range(0, index.size(1), 1500 // per_row):  # 1,500 scores a call: scored by the caller alone
            part = index[row: row + 1, a: a + 1500 // per_row]
            alone = ops.index_scores_packed(q[row: row + 1], w[row: row + 1], pool, part, 128, 32)
            assert _bits_equal(shared[row: row + 1, a * per_row: a * per_row + alone.size(1)], alone)


def test_index_scores_name_bad_input(ops):
    pool = IndexerKeyLayout().pack(torch.randn(4, 128))
    q, w = torch.randn(1, 2, 128), torch.randn(1, 2)
    with pytest.raises(RuntimeError, match="index 4 is out of range for a pool of 4 rows"):
        ops.index_scores_packed(q, w, pool, torch.tensor([[0, 4]]), 128, 32)
    with pytest.raises(RuntimeError, match=r"q must be float32 \[rows, heads, 128\]"):
        ops.index_scores_packed(q.double(), w, pool, torch.tensor([[0]]), 128, 32)
    with pytest.raises(RuntimeError, match=r"weights must be float32 \[1, 2\]"):
        ops.index_scores_packed(q, w[:, :1], pool, torch.tensor([[0]]), 128, 32)


def test_gathers_name_a_bad_index_or_pool(ops):
    pool = MainEntryLayout().pack(torch.randn(4, 512))
    with pytest.raises(RuntimeError, match="index 4 is out of range for a pool of 4 rows"):
        ops.gather_main_entries(pool, torch.tensor([0, 4]), 512, 64, 64)
    with pytest.raises(RuntimeError, match=r"a uint8 pool \[n, \.\.\., 68\] is needed"):
        ops.gather_index_keys(pool, torch.tensor([0]), 128, 32)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_put_rows_writes_as_the_python_op(ops, dtype):
    g = torch.Generator().manual_seed(2)
    pool = (torch.rand(5, 8, 3, 6, generator=g) * 200).to(dtype)
    rows, cols = torch.tensor([[4], [0]]), torch.tensor([[7, 2], [0, 5]])  # broadcast to [2,2]
    value = (torch.rand(2, 2, 3, 6, generator=g) * 200).to(dtype)
    want, got = pool.clone(), pool.clone()
    put_rows(want, rows, cols, value)
    ops.put_rows(got, rows, cols, value.expand(2, 2, 3, 6))
    assert torch.equal(got, want) and not torch.equal(got, pool)
    with pytest.raises(RuntimeError, match="row 40 is out of range for a pool of 40 rows"):
        ops.put_rows(got, torch.tensor([5]), torch.tensor([0]), value[:1, 0])
    with pytest.raises(RuntimeError, match="does not hold one pool row per"):
        ops.put_rows(got, torch.tensor([1]), torch.tensor([0]), value[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_linear_as_the_python_op(ops, dtype):
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(9, 16, generator=g).to(dtype), torch.randn(4, 24, 16, generator=g).to(dtype)
    groups = torch.tensor([0, 0, 1, 3, 3, 3, 3, 2, 2])  # runs, one group skipped... in any order of runs
    assert torch.equal(ops.grouped_linear(x, weight, groups), grouped_linear(x, weight, groups))
    empty = torch.empty(0, dtype=torch.long)
    assert ops.grouped_linear(x[:0], weight, empty).shape == (0, 24)
    with pytest.raises(RuntimeError, match="group 4 is out of range for 4 matrices"):
        ops.grouped_linear(x[:1], weight, torch.tensor([4]))


@pytest.mark.parametrize("rows", [1, 3, 6])
def test_linear_bf16_as_a_float32_product(ops, rows):
    g = torch.Generator().manual_seed(4)
    weight = (torch.randn(37, 72, generator=g) * torch.logspace(-8, 8, 72)).bfloat16()  # 72: a 16-wide tail of 8
    x = torch.randn(rows, 72, generator=g)
    want = x.double() @ weight.double().T
    got = ops.linear_bf16(x, weight)
    bound = x.double().abs() @ weight.double().abs().T  # Σ|terms|: float32 rounding of the sums
    assert got.dtype == torch.float32 and got.shape == (rows, 37)
    assert ((got.double() - want).abs() <= bound * 1e-6).all()
    with pytest.raises(RuntimeError, match=r"weight must be bfloat16 \[out, 72\]"):
        ops.linear_bf16(x, weight.float())
    with pytest.raises(RuntimeError, match=r"x must be float32 \[n, in\]"):
        ops.linear_bf16(x.double(), weight)


def test_grouped_linear_over_a_bf16_bank(ops):
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(4, 24, 40, generator=g).bfloat16()
    x, groups = torch.randn(9, 40, generator=g), torch.tensor([0, 0, 0, 0, 0, 2, 3, 3, 3])  # runs of 5, 1 and 3 rows
    want = grouped_linear(x, bank.float(), groups)
    torch.testing.assert_close(ops.grouped_linear(x, bank, groups), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grouped_linear(x, bank, groups), want, rtol=1e-5, atol=1e-5)  # the Python op too


def test_ops_serve_cpu_tensors_only(ops):
    # the kernels are CPU code: for a tensor elsewhere (a GPU's; here the meta device) the Python ops serve
    assert kernels.op("index_scores_packed", torch.empty(1)) is ops.index_scores_packed.default
    assert kernels.op("index_scores_packed", torch.empty(1, device="meta")) is None


@pytest.mark.parametrize("n", [1, 37, 2048])
def test_sinkhorn_as_the_torch_ops(ops, n):
    # sinkhorn_split without gradients runs the C++ op; with them, the batched torch ops: the same values
    g = torch.Generator().manual_seed(n)
    mixes, scale = torch.randn(1, n, 24, generator=g) * 3, torch.rand(3, generator=g)
    base = torch.randn(24, generator=g)
    with torch.no_grad():
        fast = sinkhorn_split(mixes, scale, base, 4, 20, 1e-6)
    for a, b in zip(fast, sinkhorn_split(mixes, scale, base, 4, 20, 1e-6), strict=True):
        assert _bits_equal(a, b)
    with pytest.raises(RuntimeError, match=r"comb must be float32 \[n, hc, hc\]"):
        ops.sinkhorn(torch.rand(2, 4, 3), 20, 1e-6)

"""The packed views read as plain indexing would: a span of entries read as whole blocks equals the same entries
gathered one by one, a slot row's packed ring equals its bytes unpacked, and a compiled step's slot write
(`put_rows`) lands where tensor indexing puts it."""

import pytest
import torch

from dsv4.cache.layout import IndexerKeyLayout, MainEntryLayout
from dsv4.cache.views import PagedEntries, SlotRows, put_rows


def _pool(layout, blocks: int, per_block: int, dim: int, seed: int = 0) -> torch.Tensor:
    values = torch.randn(blocks, per_block, dim, generator=torch.Generator().manual_seed(seed))
    return layout.pack(values)


@pytest.mark.parametrize("layout,dim", [(IndexerKeyLayout(), 128), (MainEntryLayout(), 512)])
@pytest.mark.parametrize("a,c", [(0, 70), (5, 67), (32, 96), (31, 33), (0, 0)])
def test_a_span_read_by_blocks_equals_entries_read_one_by_one(layout, dim, a, c):
    tables = torch.tensor([[4, 0, 2], [1, 3, 5]])  # scattered blocks of 32 entries
    view = PagedEntries(_pool(layout, 6, 32, dim), tables, torch.float32, layout)
    rows, entries = torch.arange(2)[:, None], torch.arange(a, c).expand(2, -1)
    span = view[:2, a:c]
    assert span.shape == (2, c - a, dim)
    assert torch.equal(span, view[rows, entries])
    assert torch.equal(view[:1, a:c], span[:1])


def test_a_span_past_the_table_is_refused():
    tables = torch.tensor([[4, 0, -1]])  # a row with two blocks (padded)
    view = PagedEntries(_pool(IndexerKeyLayout(), 6, 32, 128), tables, torch.float32, IndexerKeyLayout())
    view[:1, :64]
    with pytest.raises(IndexError, match="64..65"):
        view[:1, 64:65]


def test_whole_slot_rows_unpack_their_bytes():
    layout = MainEntryLayout()
    pool = _pool(layout, 5, 8, 512, seed=1)  # 5 slots of an 8-slot ring
    slots = torch.tensor([3, 0, 3])
    rings = SlotRows(pool, slots, torch.float32, layout)[:3]
    assert torch.equal(rings, layout.unpack(pool[slots]))


def test_put_rows_writes_where_indexing_does():
    pool, want = torch.zeros(4, 6, 3), torch.zeros(4, 6, 3)
    rows, cols = torch.tensor([[2], [0]]), torch.tensor([1, 5])
    value = torch.arange(12.0).view(2, 2, 3)
    put_rows(pool, rows, cols, value)
    want[rows, cols] = value
    assert torch.equal(pool, want)

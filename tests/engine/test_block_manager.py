"""Block accounting, without tensors."""

import pytest

from dsv4.cache.block_manager import BlockManager, CacheFull


def test_grow_allocates_whole_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=5, block_size=4)
    assert bm.grow(7, 1) and len(bm.table(7)) == 1
    assert bm.grow(7, 4) == []  # still one block
    assert len(bm.grow(7, 9)) == 2 and len(bm.table(7)) == 3
    bm.grow(8, 8)
    assert bm.num_used == 5 and bm.num_free == 0
    assert len(set(bm.table(7)) | set(bm.table(8))) == 5  # no block handed out twice
    assert bm.free(7) == 3 and bm.num_free == 3
    assert bm.free(7) == 0  # idempotent
    assert bm.free(8) == 2 and bm.num_used == 0


def test_cache_full_names_the_request_and_counts():
    bm = BlockManager(num_blocks=3, block_size=16)
    bm.grow(1, 32)
    assert not bm.can_grow(2, 17) and bm.can_grow(2, 16)
    with pytest.raises(CacheFull, match="request 2 needs 3 more blocks, 1 of 3 free"):
        bm.grow(2, 33)
    assert bm.num_free == 1  # a refused request takes nothing
    with pytest.raises(ValueError, match="block_size must be positive; got 0"):
        BlockManager(4, 0)

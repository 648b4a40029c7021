"""`RequestMemory`: blocks and slot together, and the block table the attention reads kept as a tensor that grows
with the blocks (equal to the block manager's table at every point, never rebuilt from the list per step)."""

import pytest
import torch

from dsv4.cache.block_manager import BlockManager, CacheFull
from dsv4.cache.paged import PagedKVCache
from dsv4.engine.request_memory import RequestMemory
from dsv4.model import preset


def _memory(num_blocks: int = 64, slots: int = 4) -> RequestMemory:
    cache = PagedKVCache(preset("test"), num_blocks, 128, slots)
    return RequestMemory(BlockManager(num_blocks, 128), cache, slots)


def _table(memory: RequestMemory, seq_id: int) -> list[int]:
    table, n = memory.tables[seq_id]
    return table[:n].tolist()


def test_the_table_tensor_follows_the_blocks_and_is_what_the_view_reads():
    memory = RequestMemory(BlockManager(64, 128), PagedKVCache(preset("test"), 64, 128, 4), 4)
    for n_tokens in (1, 129, 128 * 20, 128 * 20 + 1, 128 * 40):  # 1, 2, 20, 21, 40 blocks: the room doubles
        memory.grow(0, n_tokens)
        assert _table(memory, 0) == memory.blocks.table(0)
    table, n = memory.tables[0]
    entries = memory.view([0]).layers[2].compressor.entries.tables  # a CSA layer's view of the table
    assert entries.data_ptr() == table.data_ptr() and entries.shape == (1, n)  # the kept tensor, not a copy
    memory.grow(1, 300)
    both = memory.view([0, 1]).layers[2].compressor.entries.tables
    assert both[1].tolist() == memory.blocks.table(1) + [-1] * (n - 3)  # the shorter row padded


def test_release_gives_back_blocks_slot_and_table_together():
    memory = _memory(num_blocks=4, slots=2)
    memory.grow(0, 300)
    memory.grow(1, 100)
    assert set(memory.slots) == {0, 1} and memory.blocks.num_free == 0
    with pytest.raises(CacheFull):
        memory.grow(1, 200)
    assert _table(memory, 1) == memory.blocks.table(1)  # a failed grow changes nothing
    memory.release(0)
    assert 0 not in memory.slots and 0 not in memory.tables and memory.blocks.num_free == 3
    memory.grow(2, 10)  # the freed slot and blocks serve the next request
    assert memory.slots[2] not in (memory.slots[1], *memory.free_slots)
    assert _table(memory, 2) == memory.blocks.table(2)


def test_a_shared_prefix_starts_the_table_and_the_slot():
    memory = RequestMemory(BlockManager(8, 128), PagedKVCache(preset("test"), 8, 128, 2), 2)
    memory.grow(0, 256)
    saved = memory.publish(0, [11, 22])
    memory.share(1, memory.blocks.cached([11, 22]), saved)
    assert memory.blocks.table(1) == memory.blocks.table(0) == _table(memory, 1)
    assert all(torch.equal(v, saved[k]) for k, v in memory.save_slot(1).items())
    memory.grow(1, 300)
    assert _table(memory, 1) == memory.blocks.table(1) and len(_table(memory, 1)) == 3

"""`BlockManager`: fixed-size blocks of KV context, a free list and a block table per request.

A block holds `block_size` consecutive tokens of one request's context (every layer kind's share of them:
window slots, CSA/HCA entries, indexer keys). Plain Python, no tensors: the pools that hold the bytes are sized
from `num_blocks` and indexed by the block ids handed out here.
"""

from collections import deque


class CacheFull(RuntimeError):
    """Not enough free blocks: `needed` more blocks were asked for, `free` remain (of `total`)."""

    def __init__(self, request_id: int, needed: int, free: int, total: int):
        super().__init__(f"KV cache full: request {request_id} needs {needed} more blocks, {free} of {total} free")
        self.request_id, self.needed, self.free, self.total = request_id, needed, free, total


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive; got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive; got {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.tables: dict[int, list[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_ids)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def table(self, request_id: int) -> list[int]:
        return self.tables.get(request_id, [])

    def missing(self, request_id: int, n_tokens: int) -> int:
        """Blocks still to allocate before `request_id` can hold `n_tokens` tokens of context."""
        return max(0, self.blocks_for(n_tokens) - len(self.table(request_id)))

    def can_grow(self, request_id: int, n_tokens: int) -> bool:
        return self.missing(request_id, n_tokens) <= self.num_free

    def grow(self, request_id: int, n_tokens: int) -> list[int]:
        """Extends the request's table to cover `n_tokens` tokens; returns the new block ids."""
        needed = self.missing(request_id, n_tokens)
        if needed > self.num_free:
            raise CacheFull(request_id, needed, self.num_free, self.num_blocks)
        new = [self.free_ids.popleft() for _ in range(needed)]
        self.tables.setdefault(request_id, []).extend(new)
        return new

    def free(self, request_id: int) -> int:
        """Returns all of the request's blocks to the free list; returns how many."""
        table = self.tables.pop(request_id, [])
        self.free_ids.extend(table)
        return len(table)

"""`BlockManager`: fixed-size blocks of KV context, a free list and a block table per request.

A block holds `block_size` consecutive tokens of one request's context (every layer kind's share of them:
window slots, CSA/HCA entries, indexer keys). Plain Python, no tensors: the pools that hold the bytes are sized
from `num_blocks` and indexed by the block ids handed out here.

Prefix sharing: a full block of prompt tokens can be published under the hash of its tokens chained with the
previous block's hash; another request with the same prefix shares it (reference counts). A published block
that no request holds stays in the free list with its contents, reusable by hash until it is handed out again.
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
        self.refs = [0] * num_blocks
        self.block_of: dict[int, int] = {}  # prefix hash -> block id
        self.hash_of: dict[int, int] = {}  # block id -> prefix hash

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
        for b in new:
            self.refs[b] = 1
            self.block_of.pop(self.hash_of.pop(b, None), None)  # its old contents are gone
        self.tables.setdefault(request_id, []).extend(new)
        return new

    def free(self, request_id: int) -> int:
        """Drops the request's hold on its blocks; unshared ones go back to the free list. Returns how many."""
        table = self.tables.pop(request_id, [])
        for b in table:
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.free_ids.append(b)
        return len(table)

    # --- prefix sharing ---
    def publish(self, request_id: int, hashes: list[int]):
        """Registers the request's first len(hashes) blocks (full, never written again) under prefix hashes."""
        for b, h in zip(self.table(request_id), hashes, strict=False):
            if h not in self.block_of and b not in self.hash_of:
                self.block_of[h], self.hash_of[b] = b, h

    def cached(self, hashes: list[int]) -> list[int]:
        """Block ids of the longest published prefix of `hashes`."""
        out = []
        for h in hashes:
            if h not in self.block_of:
                break
            out.append(self.block_of[h])
        return out

    def share(self, request_id: int, blocks: list[int]):
        """Starts a request's table with published blocks (taken back from the free list if unheld)."""
        if self.table(request_id):
            raise ValueError(f"request {request_id} already holds blocks; sharing starts an empty table")
        for b in blocks:
            if self.refs[b] == 0:
                self.free_ids.remove(b)
            self.refs[b] += 1
        self.tables[request_id] = list(blocks)


def prefix_hashes(token_ids: list[int], block_size: int, n_blocks: int, known: list[int] | None = None) -> list[int]:
    """Chained hashes of the first n_blocks full blocks of tokens: h_i = hash((h_{i-1}, block i's tokens)).
    `known`: hashes already computed for a prefix of these blocks (only the rest are hashed)."""
    out = list(known or [])[:n_blocks]
    h = out[-1] if out else 0
    for i in range(len(out), n_blocks):
        h = hash((h, tuple(token_ids[i * block_size:(i + 1) * block_size])))
        out.append(h)
    return out

"""`PrefixCache`: reuse of a common prefix between requests, at block boundaries.

A V4 request's cache at position B is its compressed entries and indexer keys for tokens < B (in its blocks)
plus its slot: the window of the last 128 tokens and the compressor state of unfinished blocks. So sharing a
prefix of k blocks takes both: the k published blocks (shared, reference counted) and a copy of the slot as it
was at B = k·block_size. Prefill chunks end at block boundaries; after each, and whenever decoding reaches one,
the blocks so far are published and the slot is copied into a small LRU (`size` copies, each the per-request
fixed part of the KV plan). Generated tokens count: an agent's next turn (the same conversation plus the reply
and the tool results) starts from the end of the previous turn's reply, not from its prompt.
"""

from collections import OrderedDict

import torch

from dsv4.cache.block_manager import prefix_hashes

from .request_memory import RequestMemory
from .sequence import Sequence


class PrefixCache:
    def __init__(self, memory: RequestMemory, size: int):
        self.memory, self.blocks, self.size = memory, memory.blocks, size
        self.slots: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()  # prefix hash -> slot copy
        self.hashes: dict[int, list[int]] = {}  # running request -> its block hashes so far (hashed once)
        self.hit_tokens = 0

    def after_step(self, seq: Sequence):
        """Publishes the blocks of the tokens in the cache and keeps the slot, when they end at a block boundary."""
        bs, end = self.blocks.block_size, seq.num_computed
        if not end or end % bs or seq.seq_id not in self.memory.slots:
            return
        hashes = self.hashes[seq.seq_id] = prefix_hashes(seq.token_ids, bs, end // bs, self.hashes.get(seq.seq_id))
        self.slots[hashes[-1]] = self.memory.publish(seq.seq_id, hashes)
        self.slots.move_to_end(hashes[-1])
        while len(self.slots) > self.size:
            self.slots.popitem(last=False)

    def release(self, seq_id: int):
        self.hashes.pop(seq_id, None)

    def attach(self, seq: Sequence) -> int:
        """Starts `seq`'s memory from the longest cached prefix (at least one prompt token is left to compute):
        shares the blocks, restores the slot; returns the tokens it holds (0: nothing is cached for it)."""
        bs = self.blocks.block_size
        hashes = prefix_hashes(seq.prompt_ids, bs, (len(seq.prompt_ids) - 1) // bs)
        blocks = self.blocks.cached(hashes)
        k = next((k for k in range(len(blocks), 0, -1) if hashes[k - 1] in self.slots), 0)
        if not k:
            return 0
        self.memory.share(seq.seq_id, blocks[:k], self.slots[hashes[k - 1]])
        self.slots.move_to_end(hashes[k - 1])
        self.hit_tokens += k * bs
        return k * bs

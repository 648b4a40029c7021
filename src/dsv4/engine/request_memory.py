"""`RequestMemory`: the one owner of every request's memory in the paged KV cache.

A running request holds blocks (its block table: compressed entries and indexer keys, from the `BlockManager`) and
a slot (its window ring and compressor state). Both are allocated, grown, copied out (a snapshot, a prefix copy,
the state before a speculative step), copied in (a resume, a prefix hit, undoing a rejected draft) and released
here and nowhere else: the scheduler asks for room (and reserves the lookahead of MTP drafts), the model runner
and the speculator only read views of it. A request gets a fresh slot when it first gets blocks (a new request,
or one preempted and now recomputed from the start) and gives both back together.
"""

import torch

from dsv4.cache.block_manager import BlockManager
from dsv4.cache.paged import PagedKVCache
from dsv4.cache.snapshot import export_request, export_slot, import_request, import_slot


class RequestMemory:
    def __init__(self, blocks: BlockManager, cache: PagedKVCache | None, num_slots: int):
        """`cache` None: block tables and slot numbers only, no tensors (the scheduler's decisions alone)."""
        if cache is not None and cache.block_size != blocks.block_size:
            raise ValueError(f"the cache's block_size {cache.block_size} is not the block manager's "
                             f"{blocks.block_size}")
        self.blocks, self.cache = blocks, cache
        self.free_slots = list(range(num_slots))
        self.slots: dict[int, int] = {}  # request id -> its slot
        # request id -> its block table as a tensor on the cache's device (room doubling as it grows) and its
        # length: what the attention reads, extended by the new blocks only (not rebuilt from the list per step)
        self.tables: dict[int, tuple[torch.Tensor, int]] = {}

    # --- room ---
    def can_grow(self, seq_id: int, n_tokens: int) -> bool:
        return self.blocks.can_grow(seq_id, n_tokens)

    def covers(self, seq_id: int, n_tokens: int) -> bool:
        """The request holds blocks for n_tokens tokens of context."""
        return self.blocks.missing(seq_id, n_tokens) == 0

    def grow(self, seq_id: int, n_tokens: int):
        """Room for n_tokens tokens of context (raises `CacheFull` without it), and a fresh slot if it has none."""
        self._extend(seq_id, self.blocks.grow(seq_id, n_tokens))
        if seq_id not in self.slots:
            self._assign(seq_id)

    def release(self, seq_id: int):
        """Gives back the request's blocks (shared ones stay with their other holders) and its slot."""
        self.blocks.free(seq_id)
        self.tables.pop(seq_id, None)
        if seq_id in self.slots:
            self.free_slots.append(self.slots.pop(seq_id))

    def _extend(self, seq_id: int, new: list[int]):
        if self.cache is None or not new:
            return
        table, n = self.tables.get(seq_id, (None, 0))
        if table is None or n + len(new) > table.numel():
            room = torch.empty(max(2 * n, n + len(new), 16), dtype=torch.long, device=self.cache.device)
            if n:
                room[:n] = table[:n]
            table = room
        table[n:n + len(new)] = torch.tensor(new, dtype=torch.long)
        self.tables[seq_id] = (table, n + len(new))

    def _assign(self, seq_id: int) -> int:
        if not self.free_slots:
            raise RuntimeError(f"request {seq_id}: no free request slot ({len(self.slots)} held)")
        slot = self.slots[seq_id] = self.free_slots.pop()
        if self.cache is not None:
            self.cache.reset_slot(slot)
        return slot

    # --- what the model reads and writes ---
    def view(self, seq_ids: list[int]):
        """The requests' slots and block tables as a model cache."""
        tables = [self.tables[i][0][:self.tables[i][1]] for i in seq_ids]
        return self.cache.view([self.slots[i] for i in seq_ids], tables)

    def save_slot(self, seq_id: int) -> dict[str, torch.Tensor]:
        """A copy of the request's slot (main and MTP layers), to undo a step or to start another request from."""
        return export_slot(self.cache, self.slots[seq_id])

    def restore_slot(self, seq_id: int, saved: dict[str, torch.Tensor]):
        import_slot(self.cache, self.slots[seq_id], saved)

    # --- prefix sharing ---
    def publish(self, seq_id: int, hashes: list[int]) -> dict[str, torch.Tensor]:
        """Publishes the request's first len(hashes) blocks under their prefix hashes; returns a copy of its slot
        (as it is at the end of those blocks)."""
        self.blocks.publish(seq_id, hashes)
        return self.save_slot(seq_id)

    def share(self, seq_id: int, blocks: list[int], slot: dict[str, torch.Tensor]):
        """Starts a request from a published prefix: its blocks shared, its slot a copy of the prefix's."""
        self.blocks.share(seq_id, blocks)
        self._extend(seq_id, blocks)
        self._assign(seq_id)
        self.restore_slot(seq_id, slot)

    # --- sessions ---
    def export(self, seq_id: int, n_tokens: int) -> dict[str, torch.Tensor]:
        """Copies of what the request holds for its first n_tokens tokens (its blocks' contents and its slot)."""
        return export_request(self.cache, self.slots[seq_id], self.blocks.table(seq_id), n_tokens)

    def load(self, seq_id: int, n_tokens: int, tensors: dict[str, torch.Tensor]):
        """Gives a request blocks for n_tokens tokens and a slot, holding an `export`ed request's contents
        (everything it took is given back if they do not fit)."""
        self.grow(seq_id, n_tokens)
        try:
            import_request(self.cache, self.slots[seq_id], self.blocks.table(seq_id), tensors)
        except BaseException:
            self.release(seq_id)
            raise

"""A request's cache as named tensors (its blocks' compressed entries and indexer keys, its window ring and
compressor state), to save a session and restore it later into other blocks and another slot; and the slot part
alone, to undo a speculative step."""

import torch

from .paged import PagedKVCache


def export_slot(cache: PagedKVCache, slot: int) -> dict[str, torch.Tensor]:
    """Copies of a request slot: every layer's window ring and compressor state."""
    out = {}
    for i, p in enumerate(cache.layers):
        out[f"layers.{i}.window"] = p.window[slot].clone()
        for name, state in (("state", p.state), ("index_state", p.index_state)):
            if state is not None:
                out[f"layers.{i}.{name}.kv"], out[f"layers.{i}.{name}.score"] = state[0][slot].clone(), \
                    state[1][slot].clone()
    return out


def import_slot(cache: PagedKVCache, slot: int, tensors: dict[str, torch.Tensor]):
    for i, p in enumerate(cache.layers):
        p.window[slot] = tensors[f"layers.{i}.window"]
        for name, state in (("state", p.state), ("index_state", p.index_state)):
            if state is not None:
                state[0][slot], state[1][slot] = tensors[f"layers.{i}.{name}.kv"], tensors[f"layers.{i}.{name}.score"]


def export_request(cache: PagedKVCache, slot: int, table: list[int], n_tokens: int) -> dict[str, torch.Tensor]:
    """Copies of what the request holds for its first `n_tokens` tokens."""
    blocks = torch.tensor(table[: -(-n_tokens // cache.block_size)], dtype=torch.long)
    out = export_slot(cache, slot)
    for i, p in enumerate(cache.layers):
        for name, pool in (("entries", p.entries), ("keys", p.keys)):
            if pool is not None:
                out[f"layers.{i}.{name}"] = pool[blocks.to(pool.device)].clone()
    return out


def import_request(cache: PagedKVCache, slot: int, table: list[int], tensors: dict[str, torch.Tensor]):
    """Writes an exported request into `slot` and the first blocks of `table`."""
    expected = set(export_request(cache, slot, table[:1], 1)) if table else set()
    if set(tensors) != expected:
        raise ValueError(f"snapshot does not match this cache: missing {sorted(expected - set(tensors))[:4]}, "
                         f"unexpected {sorted(set(tensors) - expected)[:4]}")
    import_slot(cache, slot, tensors)
    for i, p in enumerate(cache.layers):
        for name, pool in (("entries", p.entries), ("keys", p.keys)):
            if pool is not None:
                saved = tensors[f"layers.{i}.{name}"]
                pool[torch.tensor(table[: saved.size(0)], dtype=torch.long, device=pool.device)] = saved

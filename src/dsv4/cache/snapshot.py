"""A request's cache as named tensors (its blocks' compressed entries and indexer keys, its window ring and
compressor state), to save a session and restore it later into other blocks and another slot; and the slot part
alone, to undo a speculative step or to start from a shared prefix.

A cache built for speculative decoding also holds the MTP layers' slots (`mtp.N.*`): they travel with the slot, so
a restored request drafts as well as it did. They are optional on import: a snapshot taken without them restores
into a speculative engine (its drafts are poor until the MTP window refills, its output is unchanged), and one
taken with them restores into a plain engine.
"""

import torch

from .paged import PagedKVCache


def _named_layers(cache: PagedKVCache):
    """(name prefix, pools) of every layer: `layers.N`, then the MTP layers' `mtp.N`."""
    yield from ((f"layers.{i}", p) for i, p in enumerate(cache.layers))
    yield from ((f"mtp.{i}", p) for i, p in enumerate(cache.mtp))


def _slot_tensors(cache: PagedKVCache, slot: int) -> dict[str, torch.Tensor]:
    """The slot's rows (views into the pools) by name: every layer's window ring and compressor state."""
    out = {}
    for prefix, p in _named_layers(cache):
        out[f"{prefix}.window"] = p.window[slot]
        for name, state in (("state", p.state), ("index_state", p.index_state)):
            if state is not None:
                out[f"{prefix}.{name}.kv"], out[f"{prefix}.{name}.score"] = state[0][slot], state[1][slot]
    return out


def export_slot(cache: PagedKVCache, slot: int) -> dict[str, torch.Tensor]:
    """Copies of a request slot (main and MTP layers)."""
    return {name: rows.clone() for name, rows in _slot_tensors(cache, slot).items()}


def import_slot(cache: PagedKVCache, slot: int, tensors: dict[str, torch.Tensor]):
    """Writes copies from `export_slot` into `slot`; MTP rows the copy lacks are left as they are."""
    for name, rows in _slot_tensors(cache, slot).items():
        if name in tensors or not name.startswith("mtp."):
            rows.copy_(tensors[name])


def export_request(cache: PagedKVCache, slot: int, table: list[int], n_tokens: int) -> dict[str, torch.Tensor]:
    """Copies of what the request holds for its first `n_tokens` tokens."""
    blocks = torch.tensor(table[: -(-n_tokens // cache.block_size)], dtype=torch.long)
    out = export_slot(cache, slot)
    for prefix, p in _named_layers(cache):
        for name, pool in (("entries", p.entries), ("keys", p.keys)):
            if pool is not None:
                out[f"{prefix}.{name}"] = pool[blocks.to(pool.device)].clone()
    return out


def import_request(cache: PagedKVCache, slot: int, table: list[int], tensors: dict[str, torch.Tensor]):
    """Writes an exported request into `slot` and the first blocks of `table`."""
    main = {k: v for k, v in tensors.items() if not k.startswith("mtp.")}  # MTP rows are optional (see above)
    expected = {k for k in export_request(cache, slot, table[:1], 1) if not k.startswith("mtp.")} if table else set()
    if set(main) != expected:
        raise ValueError(f"snapshot does not match this cache: missing {sorted(expected - set(main))[:4]}, "
                         f"unexpected {sorted(set(main) - expected)[:4]}")
    import_slot(cache, slot, tensors)
    for prefix, p in _named_layers(cache):
        for name, pool in (("entries", p.entries), ("keys", p.keys)):
            if pool is not None and f"{prefix}.{name}" in tensors:
                saved = tensors[f"{prefix}.{name}"]
                pool[torch.tensor(table[: saved.size(0)], dtype=torch.long, device=pool.device)] = saved

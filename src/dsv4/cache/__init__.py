"""The KV cache as deployed: packed entry formats, block accounting, the KV memory plan."""

from .block_manager import BlockManager, CacheFull
from .layout import IndexerKeyLayout, LayoutError, MainEntryLayout
from .paged import PagedKVCache
from .plan import KVPlan

__all__ = ["BlockManager", "CacheFull", "IndexerKeyLayout", "KVPlan", "LayoutError", "MainEntryLayout",
           "PagedKVCache"]

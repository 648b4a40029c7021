"""The KV cache as deployed: packed entry formats, block accounting, the KV memory plan."""

from .layout import IndexerKeyLayout, LayoutError, MainEntryLayout

__all__ = ["IndexerKeyLayout", "LayoutError", "MainEntryLayout"]

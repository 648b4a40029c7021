from .attention import Attention, sink_attention
from .compressor import Compressor
from .indexer import Indexer

__all__ = ["Attention", "Compressor", "Indexer", "sink_attention"]

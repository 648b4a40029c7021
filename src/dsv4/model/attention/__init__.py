from .attention import Attention
from .compressor import Compressor
from .indexer import Indexer
from .sparse import gathered_sink_attention, sink_attention

__all__ = ["Attention", "Compressor", "Indexer", "gathered_sink_attention", "sink_attention"]

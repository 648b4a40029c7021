"""DeepSeek-V4 in PyTorch, faithful to DeepSeek's released `inference/model.py`.

Axis alphabet of the shape comments: b batch, s sequence (new tokens), h heads, d width, hc hyper-connection
streams, t / n / k compressed entries or keys, r low-rank width, g output groups.
"""

from .cache import ModelCache
from .config import ModelConfig
from .presets import PRESETS, preset
from .transformer import Transformer

__all__ = ["ModelCache", "ModelConfig", "PRESETS", "Transformer", "load_model", "preset"]


def load_model(path, dtype=None, device=None, config: ModelConfig | None = None, **config_changes):
    """Builds the model from a checkpoint directory (config.json + *.safetensors)."""
    from .checkpoint import load_model as _load

    return _load(path, dtype=dtype, device=device, config=config, **config_changes)

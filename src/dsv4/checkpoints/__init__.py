"""Checkpoints that ship inside the package. `builtin`: the small V4 that `dsv4 train` (`make model`) trains on a
2-core CPU, in the released layout (config.json, model.safetensors, tokenizer.json) with its card (card.md: how it
was trained and what it measurably can and cannot do)."""

from importlib.resources import files
from pathlib import Path


def builtin() -> Path | None:
    """The built-in trained checkpoint's directory, or None in a tree that does not hold it."""
    path = Path(str(files(__name__) / "builtin"))
    return path if (path / "config.json").is_file() and (path / "model.safetensors").is_file() else None

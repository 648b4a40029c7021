"""Writes a checkpoint directory in the released layout: config.json (HF keys) and safetensors shards with
the official names, FP8 / FP4 weights with their E8M0 scales, BF16 / FP32 / int32 tensors as released.

Tensors are produced and encoded one at a time (from a model's parameters, or random for a config), so a large
preset is streamed to disk shard by shard."""

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import scale_name, stored_format, write_config
from .config import ModelConfig
from .init import random_tensor
from .transformer import Transformer
from .weights import fp4_encode, fp8_encode

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "int32": torch.int32}


def encode(name: str, tensor: torch.Tensor, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    fmt = stored_format(name, config)
    if fmt in ("fp8", "fp4"):
        q, s = (fp8_encode if fmt == "fp8" else fp4_encode)(tensor)
        yield name, q
        yield scale_name(name), s
    else:
        yield name, tensor.to(DTYPES[fmt]).contiguous()


def write_checkpoint(out: str | Path, model: Transformer | None = None, config: ModelConfig | None = None,
                     seed: int = 0, shard_bytes: int = 4 << 30) -> Path:
    """Writes `model`'s weights, or (model=None) random weights for `config`, to directory `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config if model is not None else config
    if model is None:
        with torch.device("meta"):
            shapes = Transformer(config, torch.float32)
        g = torch.Generator().manual_seed(seed)
        params = ((n, random_tensor(n, tuple(p.shape), config, g)) for n, p in shapes.named_parameters())
    else:
        params = ((n, p.detach()) for n, p in model.named_parameters())
    write_config(config, out)
    _write_shards(out, (pair for name, t in params for pair in encode(name, t, config)), shard_bytes)
    return out


def _write_shards(out: Path, tensors: Iterator[tuple[str, torch.Tensor]], shard_bytes: int) -> None:
    shards, current, size = [], {}, 0
    for name, t in tensors:
        current[name] = t
        size += t.numel() * t.element_size()
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current or not shards:
        shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

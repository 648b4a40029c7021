"""What `dsv4 inspect` reports, from config.json and safetensors headers only (no weights are read):
parameter counts (total, per-token active), layer layout and KV-cache bytes per token."""

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .block import Block
from .config import ModelConfig

MAIN_ENTRY_BYTES = 584  # 448 FP8 nope + 64 BF16 rope dims + 7 UE8M0 scales + 1 pad (FlashMLA layout)
INDEXER_KEY_BYTES = 68  # 128 MXFP4 values + 4 UE8M0 scales
ROUTED = re.compile(r"\.experts\.\d+\.")


@dataclass
class ParamCounts:
    total: int  # main model (layers, embed, head, norms), without MTP
    mtp: int
    active: int  # per token: non-routed params + n_activated / n_routed of the routed experts
    embed: int


def count_params(config: ModelConfig) -> ParamCounts:
    """Exact counts from the module shapes (built on the meta device, one block per distinct layer type)."""
    blocks: dict[tuple, tuple[int, int]] = {}
    total = active = mtp = 0
    for layer_id in range(config.n_all_layers):
        key = (config.compress_ratio(layer_id), config.is_hash_layer(layer_id), layer_id >= config.n_layers)
        if key not in blocks:
            blocks[key] = _block_counts(layer_id, config)
        all_params, routed = blocks[key]
        if layer_id >= config.n_layers:
            mtp += all_params + _mtp_extra(config)
            continue
        total += all_params
        active += all_params - routed + routed * config.n_activated_experts // config.n_routed_experts
    embed = config.vocab_size * config.dim
    top = 2 * embed + config.dim + _hc_head(config)  # embed, head, norm, hc_head
    return ParamCounts(total=total + top, mtp=mtp, active=active + top, embed=embed)


def _block_counts(layer_id: int, config: ModelConfig) -> tuple[int, int]:
    with torch.device("meta"):
        block = Block(layer_id, config, torch.bfloat16)
    routed = sum(p.numel() for n, p in block.named_parameters() if ROUTED.search("." + n))
    return sum(p.numel() for p in block.parameters()), routed


def _mtp_extra(config: ModelConfig) -> int:
    d = config.dim
    return 2 * d * d + 3 * d + _hc_head(config)  # e_proj, h_proj, enorm/hnorm/norm, hc_head


def _hc_head(config: ModelConfig) -> int:
    return config.hc_mult * config.hc_mult * config.dim + config.hc_mult + 1  # fn, base, scale


def kv_bytes_per_token(config: ModelConfig) -> dict[str, float]:
    """Context-proportional KV bytes per token over the main layers, deployed and reference-buffer layouts."""
    kinds = [config.layer_kind(i) for i in range(config.n_layers)]
    csa, hca = kinds.count("csa"), kinds.count("hca")
    deployed = csa * (MAIN_ENTRY_BYTES + INDEXER_KEY_BYTES) / 4 + hca * MAIN_ENTRY_BYTES / 128
    bf16 = csa * (2 * config.head_dim + 2 * config.index_head_dim) / 4 + hca * 2 * config.head_dim / 128
    window = config.window_size * MAIN_ENTRY_BYTES * config.n_layers
    return {"deployed": deployed, "bf16_reference": bf16, "window_per_sequence": window}


def layer_layout(config: ModelConfig) -> str:
    kinds = [config.layer_kind(i) for i in range(config.n_layers)]
    counts = ", ".join(f"{k}×{kinds.count(k)}" for k in ("window", "csa", "hca") if kinds.count(k))
    letters = "".join({"window": "W", "csa": "C", "hca": "H"}[k] for k in kinds)
    hashed = f"layers 0-{config.n_hash_layers - 1}" if config.n_hash_layers else "none"
    mtp = [config.layer_kind(i) for i in range(config.n_layers, config.n_all_layers)]
    return f"{counts}; hash-routed: {hashed}; MTP: {', '.join(mtp) or 'none'}; {letters}"


def read_headers(path: str | Path) -> dict[str, dict]:
    """name -> {"dtype", "shape"} from every *.safetensors header in a directory (8-byte length + JSON)."""
    headers = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        headers.update(header)
    return headers


def header_params(headers: dict[str, dict]) -> tuple[int, int]:
    """(logical parameter count without scales, bytes of tensor data) from safetensors headers."""
    params = nbytes = 0
    for name, info in headers.items():
        start, end = info["data_offsets"]
        nbytes += end - start
        if name.endswith((".scale", ".weight_scale_inv")):
            continue
        n = 1
        for d in info["shape"]:
            n *= d
        params += 2 * n if info["dtype"] in ("I8", "U8", "F4") and ROUTED.search(name) else n
    return params, nbytes

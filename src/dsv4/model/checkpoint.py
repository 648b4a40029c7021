"""Checkpoints in the released layout: `config.json` + safetensors with the official tensor names.

Weights listed by `stored_format` are FP8 (128x128 block scales) or FP4 (routed experts, per-32 scales); their
scales are stored next to them as `<name without .weight>.scale` (`.weight_scale_inv` is accepted too). Loading
builds the model on the meta device and materializes one tensor at a time from memory-mapped files, so peak
memory stays near the model's own size.
"""

import json
import re
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .config import ModelConfig
from .transformer import Transformer
from .weights import fp4_decode, fp8_decode

FP8_WEIGHT = re.compile(r"(^|\.)(attn\.(wq_a|wq_b|wkv|wo_a|wo_b)|indexer\.wq_b|shared_experts\.w[123]"
                        r"|e_proj|h_proj)\.weight$")
ROUTED_EXPERT = re.compile(r"\.experts\.\d+\.w[123]\.weight$")
FP32_LEAVES = ("attn_sink", "ape", "gate.bias")
# Spellings the official convert.py normalizes (HF-side names) -> the reference names used here.
ALIASES = ((".self_attn.", ".attn."), (".mlp.", ".ffn."), (".weight_scale_inv", ".scale"),
           (".e_score_correction_bias", ".bias"))
# The MTP layer shares the main embedding and head; copies stored under mtp.N are skipped (as convert.py does).
SHARED_MTP = re.compile(r"^mtp\.\d+\.(.*emb.*|.*head\.weight)$")


class CheckpointError(ValueError):
    pass


def stored_format(name: str, config: ModelConfig) -> str:
    """How the released checkpoint stores parameter `name`: fp8, fp4, bf16, fp32 or int32."""
    if ROUTED_EXPERT.search(name):
        return config.expert_format
    if FP8_WEIGHT.search(name):
        return config.dtype
    if name.endswith("tid2eid"):
        return "int32"
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("hc_") or name.endswith(FP32_LEAVES):
        return "fp32"
    return "bf16"


def scale_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight") + ".scale"


class CheckpointReader:
    """Tensor names -> memory-mapped safetensors files of a checkpoint directory (headers only until read)."""

    def __init__(self, path: str | Path, stack: ExitStack):
        self.path = Path(path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no *.safetensors files in {self.path}")
        self.files = {}  # reference name -> (open file, stored key)
        for file in files:
            handle = stack.enter_context(safe_open(file, framework="pt", device="cpu"))
            for key in handle.keys():
                name = canonical_name(key)
                if name in self.files:
                    raise CheckpointError(f"tensor {key!r} appears twice in {self.path} (as {self.files[name][1]!r})")
                if not SHARED_MTP.match(name):
                    self.files[name] = (handle, key)

    def names(self) -> set[str]:
        return set(self.files)

    def get(self, name: str) -> torch.Tensor:
        handle, key = self.files[name]
        return handle.get_tensor(key)

    def scale_of(self, weight_name: str) -> str | None:
        name = scale_name(weight_name)
        return name if name in self.files else None


def canonical_name(key: str) -> str:
    name = key.removeprefix("model.")
    for old, new in ALIASES:
        name = name.replace(old, new)
    return name


def read_config(path: str | Path) -> ModelConfig:
    file = Path(path) / "config.json"
    if not file.exists():
        raise CheckpointError(f"missing {file}")
    return ModelConfig.from_file(file)


def load_model(path, dtype=None, device=None, config: ModelConfig | None = None, **changes) -> Transformer:
    config = (config or read_config(path)).replace(**changes) if changes else (config or read_config(path))
    with torch.device("meta"):
        model = Transformer(config, dtype or torch.bfloat16)
    with ExitStack() as stack:
        load_weights(model, CheckpointReader(path, stack), device or "cpu")
    return model.eval()


def load_weights(model: Transformer, reader: CheckpointReader, device) -> None:
    params = dict(model.named_parameters())
    present = reader.names()
    scales = {s for n in params if (s := reader.scale_of(n))}
    missing = sorted(set(params) - present)
    unexpected = sorted(present - set(params) - scales)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {reader.path} does not match the config: "
                              f"missing {_some(missing)}; unexpected {_some(unexpected)}")
    for name, param in params.items():
        tensor = decode(name, reader, tuple(param.shape))
        _check_values(name, tensor, model.config)
        _assign(model, name, tensor.to(device=device, dtype=param.dtype))


def decode(name: str, reader: CheckpointReader, shape: tuple[int, ...]) -> torch.Tensor:
    """The stored tensor `name` dequantized to float32 (or as stored if not quantized), checked against shape."""
    t, scale = reader.get(name), reader.scale_of(name)
    stored = f"stored {tuple(t.shape)} {t.dtype}"
    if t.dtype == torch.float8_e4m3fn or t.dtype in (torch.int8, torch.uint8, torch.float4_e2m1fn_x2):
        if scale is None:
            raise CheckpointError(f"{name}: quantized weight ({stored}) without a .scale tensor")
        s = reader.get(scale)
        fp4 = t.dtype != torch.float8_e4m3fn
        if fp4 and t.dtype == torch.float4_e2m1fn_x2:
            t = t.view(torch.uint8)
        expected_scale = _fp4_scale_shape(shape) if fp4 else _fp8_scale_shape(shape)
        if len(shape) != 2 or tuple(t.shape) != ((shape[0], shape[1] // 2) if fp4 else shape) or \
                tuple(s.shape) != expected_scale:
            raise CheckpointError(f"{name}: expected {'FP4' if fp4 else 'FP8'} weight of logical shape {shape} "
                                  f"with scale {expected_scale}; {stored}, scale {scale} {tuple(s.shape)}")
        return fp4_decode(t, s) if fp4 else fp8_decode(t, s)
    if tuple(t.shape) != shape:
        raise CheckpointError(f"{name}: expected shape {shape}; {stored}")
    return t


def _fp8_scale_shape(shape):
    return tuple(-(-n // 128) for n in shape)


def _fp4_scale_shape(shape):
    return (shape[0], shape[1] // 32) if len(shape) == 2 else None


def _check_values(name: str, t: torch.Tensor, config: ModelConfig) -> None:
    if name.endswith("tid2eid") and t.numel() and not 0 <= int(t.min()) <= int(t.max()) < config.n_routed_experts:
        raise CheckpointError(f"{name}: expert ids must be in [0, n_routed_experts={config.n_routed_experts}); "
                              f"got [{int(t.min())}, {int(t.max())}]")


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def _some(names: list[str], n: int = 12) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def write_config(config: ModelConfig, out: Path) -> None:
    (out / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")

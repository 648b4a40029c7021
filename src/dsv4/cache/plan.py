"""The KV memory plan of a model (what `dsv4 kv-plan` prints): bytes per token by layer kind in the deployed
packed layout, the fixed per-request part, baselines, requests that fit, and decode FLOPs per token.

Context-proportional bytes per token (main layers): CSA (main entry + indexer key) / 4, HCA main entry / 128;
window-only layers add nothing per token. Fixed per request: 128 window entries per layer and the FP32
compressor state of unfinished blocks (kv + score, `coff·ratio` slots of `coff·width`, coff = 2 at ratio 4).
"""

from dataclasses import dataclass

from dsv4.model.config import ModelConfig

from .layout import IndexerKeyLayout, MainEntryLayout

# DeepSeek-V3.2 (61 MLA layers): 656 B FP8 latent + BF16 RoPE entry and a 132 B FP8 indexer key per layer.
V32_LAYERS, V32_ENTRY_BYTES, V32_INDEX_KEY_BYTES = 61, 656, 132
V32_ACTIVE_PARAMS, V32_HEADS, V32_TOPK, V32_KEY_DIM, V32_VALUE_DIM = 37e9, 128, 2048, 576, 512
GQA_KV_HEADS, GQA_HEAD_DIM, GQA_BYTES = 8, 128, 2  # the report's GQA-8 bf16 baseline


@dataclass(frozen=True)
class KindBytes:
    kind: str  # window | csa | hca
    n_layers: int
    per_layer: float  # context-proportional bytes per token of one layer

    @property
    def total(self) -> float:
        return self.n_layers * self.per_layer


@dataclass(frozen=True)
class DecodeFlops:
    """FLOPs of one decode token: 2 × active params, core attention 2·heads·keys·(K+V dims) per layer, and the
    indexer scan 2·heads·dim per scanned key. `weighted` counts FP8-equivalents: BF16 attention ×2, FP4 ×0.5."""

    params: float
    attention: float
    indexer: float
    weighted: float

    @property
    def raw(self) -> float:
        return self.params + self.attention + self.indexer


class KVPlan:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.main = MainEntryLayout(config.head_dim, config.rope_head_dim)
        self.index_key = IndexerKeyLayout(config.index_head_dim)
        self.kinds = [config.layer_kind(i) for i in range(config.n_layers)]

    def by_kind(self) -> list[KindBytes]:
        per_layer = {"window": 0.0, "csa": (self.main.nbytes + self.index_key.nbytes) / 4,
                     "hca": self.main.nbytes / 128}
        return [KindBytes(k, self.kinds.count(k), per_layer[k]) for k in ("window", "csa", "hca")
                if self.kinds.count(k)]

    def bytes_per_token(self) -> float:
        return sum(k.total for k in self.by_kind())

    def bf16_reference_bytes_per_token(self) -> float:
        """The reference's BF16 buffers: 2 B per dim for main entries and indexer keys."""
        c = self.config
        return self.kinds.count("csa") * 2 * (c.head_dim + c.index_head_dim) / 4 + \
            self.kinds.count("hca") * 2 * c.head_dim / 128

    def window_bytes(self) -> int:
        return self.config.window_size * self.main.nbytes * self.config.n_layers

    def state_bytes(self) -> int:
        """FP32 compressor state per request (main compressors, and the indexer's in CSA layers)."""
        c, total = self.config, 0
        for kind in self.kinds:
            if kind == "csa":
                total += 2 * (2 * 4) * (2 * c.head_dim) * 4 + 2 * (2 * 4) * (2 * c.index_head_dim) * 4
            elif kind == "hca":
                total += 2 * 128 * c.head_dim * 4
        return total

    def fixed_bytes(self) -> int:
        return self.window_bytes() + self.state_bytes()

    def request_bytes(self, n_tokens: int) -> float:
        return n_tokens * self.bytes_per_token() + self.fixed_bytes()

    def requests_that_fit(self, n_tokens: int, memory_bytes: float, weight_bytes: float) -> int:
        return max(0, int((memory_bytes - weight_bytes) // self.request_bytes(n_tokens)))

    def decode_flops(self, context: int, active_params: float) -> DecodeFlops:
        c = self.config
        keys = {"window": min(context, c.window_size),
                "csa": min(context, c.window_size) + min(c.index_topk, context // 4),
                "hca": min(context, c.window_size) + context // 128}
        attention = sum(2 * c.n_heads * keys[k] * 2 * c.head_dim for k in self.kinds)
        indexer = self.kinds.count("csa") * 2 * c.index_n_heads * c.index_head_dim * (context // 4)
        params = 2 * active_params
        return DecodeFlops(params, attention, indexer, params + 2 * attention + 0.5 * indexer)


def v32_bytes_per_token() -> int:
    return V32_LAYERS * (V32_ENTRY_BYTES + V32_INDEX_KEY_BYTES)


def gqa_bytes_per_token(n_layers: int) -> int:
    return n_layers * 2 * GQA_KV_HEADS * GQA_HEAD_DIM * GQA_BYTES


def v32_decode_flops(context: int) -> DecodeFlops:
    """V3.2 at `context`: absorbed MLA over its top-2048 keys, FP8 indexer over every token in all 61 layers."""
    params = 2 * V32_ACTIVE_PARAMS
    attention = V32_LAYERS * 2 * V32_HEADS * min(V32_TOPK, context) * (V32_KEY_DIM + V32_VALUE_DIM)
    indexer = V32_LAYERS * 2 * 64 * 128 * context
    return DecodeFlops(params, attention, indexer, params + 2 * attention + indexer)


# bytes per stored parameter by checkpoint format (FP8: one E8M0 per 128x128 block; FP4: one per 32 values)
FORMAT_BYTES = {"fp8": 1 + 1 / 16384, "fp4": 0.5 + 1 / 32, "bf16": 2, "fp32": 4, "int32": 4}


def estimate_weight_bytes(config: ModelConfig) -> float:
    """Checkpoint bytes in the released formats, from module shapes on the meta device (one block per distinct
    layer type), for presets without files."""
    import torch

    from dsv4.model.block import Block
    from dsv4.model.checkpoint import stored_format

    seen: dict[tuple, float] = {}
    total = 0.0
    for i in range(config.n_all_layers):
        key = (config.compress_ratio(i), config.is_hash_layer(i))
        if key not in seen:
            with torch.device("meta"):
                block = Block(i, config, torch.bfloat16)
            seen[key] = sum(p.numel() * FORMAT_BYTES[stored_format(f"layers.{i}.{n}", config)]
                            for n, p in block.named_parameters())
        total += seen[key]
    d, v, hc = config.dim, config.vocab_size, config.hc_mult
    top = 2 * v * d * 2 + (hc * hc * d + hc + 1) * 4  # embed + head (BF16), hyper head (FP32)
    mtp = config.n_mtp_layers * 2 * d * d * FORMAT_BYTES[config.dtype]  # e_proj, h_proj
    return total + top + mtp

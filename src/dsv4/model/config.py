"""`ModelConfig`: the DeepSeek-V4 hyperparameters, one typed object passed to every constructor.

Field names are the reference `inference/config.json` keys (`dim`, `n_layers`, `window_size`, ...). The HF
`config.json` key names (`hidden_size`, `num_hidden_layers`, `sliding_window`, `rope_scaling`, ...) are accepted
by `ModelConfig.from_dict` and written back by `ModelConfig.to_hf_dict`.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# HF config.json key -> ModelConfig field.
HF_KEYS = {
    "hidden_size": "dim",
    "moe_intermediate_size": "moe_inter_dim",
    "num_hidden_layers": "n_layers",
    "num_hash_layers": "n_hash_layers",
    "num_nextn_predict_layers": "n_mtp_layers",
    "num_attention_heads": "n_heads",
    "num_experts_per_tok": "n_activated_experts",
    "scoring_func": "score_func",
    "routed_scaling_factor": "route_scale",
    "qk_rope_head_dim": "rope_head_dim",
    "rms_norm_eps": "norm_eps",
    "sliding_window": "window_size",
}
ROPE_SCALING_KEYS = {
    "factor": "rope_factor",
    "original_max_position_embeddings": "original_seq_len",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
}
# Keys of the released config.json that carry nothing the model needs (or are fixed by the architecture).
IGNORED_KEYS = {
    "architectures", "model_type", "attention_bias", "attention_dropout", "bos_token_id", "eos_token_id",
    "hidden_act", "initializer_range", "max_position_embeddings", "norm_topk_prob", "num_key_value_heads",
    "tie_word_embeddings", "topk_method", "torch_dtype", "transformers_version", "use_cache",
    "max_batch_size", "max_seq_len", "scale_dtype", "pad_token_id",
}
COMPRESS_RATIOS = (0, 4, 128)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 129280
    dim: int = 4096
    moe_inter_dim: int = 2048
    n_layers: int = 43
    n_hash_layers: int = 3
    n_mtp_layers: int = 1
    n_heads: int = 64
    # moe
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    # attention
    q_lora_rank: int = 1024
    head_dim: int = 512
    rope_head_dim: int = 64
    norm_eps: float = 1e-6
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    compress_ratios: tuple[int, ...] = ()
    # rope / yarn (YaRN only in compressed layers)
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    original_seq_len: int = 65536
    rope_factor: float = 16.0
    beta_fast: int = 32
    beta_slow: int = 1
    # lightning indexer
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    # hyper-connections
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    # weight formats of the checkpoint
    dtype: str = "fp8"
    scale_fmt: str | None = "ue8m0"
    expert_dtype: str | None = "fp4"
    # simulation of the deployed formats inside the forward pass (as the reference does)
    simulate_kv_quant: bool = True
    # With simulate_kv_quant, the RoPE dims of main KV entries (window and compressed) in BF16, as the deployed
    # cache stores them (FlashMLA layout, dsv4.cache) and as the reference's BF16 activations hold them. False keeps
    # them in the compute dtype, as the reference run in float32 does (test_golden); the paged cache of the
    # engine stores BF16 regardless, so only True makes the engine compute what the model does in float32.
    simulate_kv_rope_bf16: bool = True
    # The reference's linear() rounds a GEMM's input to FP8 (1x128 blocks, power-of-two scales) exactly when the
    # weight is FP8 or FP4 (`rounds_input`). False skips that rounding for speed and leaves the official numerics
    # on FP8/FP4 checkpoints (BF16 ones are unaffected): in tests/model/test_golden.py the FP8 modules then differ
    # from the official ones by 0.05-0.18 instead of 1e-7.
    simulate_act_quant: bool = True
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "compress_ratios", tuple(int(r) for r in self.compress_ratios))
        self._check()

    def _check(self):
        n = self.n_layers + self.n_mtp_layers
        if len(self.compress_ratios) != n:
            raise ValueError(f"compress_ratios has {len(self.compress_ratios)} entries; expected n_layers + "
                             f"n_mtp_layers = {n}")
        bad = [r for r in self.compress_ratios if r not in COMPRESS_RATIOS]
        if bad:
            raise ValueError(f"compress_ratios values must be in {COMPRESS_RATIOS}; got {bad}")
        for name in ("n_layers", "dim", "n_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank",
                     "n_routed_experts", "n_activated_experts", "moe_inter_dim", "window_size", "hc_mult",
                     "index_n_heads", "index_head_dim", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if not 0 < self.rope_head_dim < self.head_dim or self.rope_head_dim % 2:
            raise ValueError(f"rope_head_dim={self.rope_head_dim} must be even and below head_dim={self.head_dim}")
        if self.n_heads % self.o_groups:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by o_groups={self.o_groups}")
        if self.n_activated_experts > self.n_routed_experts:
            raise ValueError(f"n_activated_experts={self.n_activated_experts} exceeds "
                             f"n_routed_experts={self.n_routed_experts}")
        if not 0 <= self.n_hash_layers <= self.n_layers:
            raise ValueError(f"n_hash_layers={self.n_hash_layers} must be within [0, n_layers={self.n_layers}]")
        if self.n_shared_experts != 1:
            raise ValueError(f"n_shared_experts must be 1; got {self.n_shared_experts}")
        if self.score_func not in ("sqrtsoftplus", "sigmoid", "softmax"):
            raise ValueError(f"score_func must be sqrtsoftplus, sigmoid or softmax; got {self.score_func!r}")
        if self.index_head_dim & (self.index_head_dim - 1) or self.index_head_dim < self.rope_head_dim:
            raise ValueError(f"index_head_dim={self.index_head_dim} must be a power of two >= rope_head_dim")
        if (self.head_dim - self.rope_head_dim) % 64:
            raise ValueError(f"head_dim - rope_head_dim = {self.head_dim - self.rope_head_dim} must be a "
                             "multiple of 64 (FP8 KV blocks)")
        if self.expert_dtype not in (None, "fp4", "fp8"):
            raise ValueError(f"expert_dtype must be None, 'fp4' or 'fp8'; got {self.expert_dtype!r}")
        if self.dtype not in ("fp8", "bf16"):
            raise ValueError(f"dtype must be 'fp8' or 'bf16'; got {self.dtype!r}")

    # --- derived values (one place) ---
    @property
    def n_all_layers(self) -> int:
        return self.n_layers + self.n_mtp_layers

    def compress_ratio(self, layer_id: int) -> int:
        return self.compress_ratios[layer_id]

    def is_hash_layer(self, layer_id: int) -> bool:
        return layer_id < self.n_hash_layers

    def layer_kind(self, layer_id: int) -> str:
        return {0: "window", 4: "csa", 128: "hca"}[self.compress_ratios[layer_id]]

    @property
    def expert_format(self) -> str:
        """Weight format of the routed experts: fp4, fp8 or bf16 (unset: the other weights' format)."""
        return self.expert_dtype or self.dtype

    def rounds_input(self, weight_format: str) -> bool:
        """Whether a GEMM with a weight in `weight_format` rounds its input to FP8 first, as the reference's
        linear() does for FP8 and FP4 weights (and only for them)."""
        return self.simulate_act_quant and weight_format in ("fp8", "fp4")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # --- json ---
    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Reads reference (`inference/config.json`) or HF (`config.json`) key names."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw, extra = {}, {}
        for key, value in d.items():
            if key == "dtype" and value not in ("fp8", "bf16"):
                extra[key] = value  # HF's torch dtype name, e.g. "bfloat16"
            elif key in fields:
                kw[key] = value
            elif key in HF_KEYS:
                kw[HF_KEYS[key]] = value
            elif key == "rope_scaling" and value:
                kw.update({ROPE_SCALING_KEYS[k]: v for k, v in value.items() if k in ROPE_SCALING_KEYS})
            elif key == "quantization_config" and value:
                kw["dtype"] = "fp8" if value.get("quant_method") == "fp8" else "bf16"
                kw["scale_fmt"] = value.get("scale_fmt")
                if "expert_dtype" in value:
                    kw.setdefault("expert_dtype", value["expert_dtype"])
            elif key in IGNORED_KEYS:
                extra[key] = value
            else:
                raise ValueError(f"unknown config key {key!r} (value {value!r})")
        if "hidden_size" in d and "quantization_config" not in d:
            kw["dtype"] = "bf16"
        kw.setdefault("expert_dtype", None)  # absent in a config file means unquantized experts
        if "n_mtp_layers" not in kw and "compress_ratios" in kw:
            n_layers = kw.get("n_layers", cls.n_layers)
            kw["n_mtp_layers"] = len(kw["compress_ratios"]) - n_layers
        return cls(**kw, extra=extra)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        """Reference (`inference/config.json`) key names."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["compress_ratios"] = list(self.compress_ratios)
        return d

    def to_hf_dict(self) -> dict:
        """The released HF `config.json` layout."""
        inverse = {v: k for k, v in HF_KEYS.items()}
        skip = {"dtype", "scale_fmt", "rope_factor", "original_seq_len", "beta_fast", "beta_slow",
                "simulate_kv_quant", "simulate_kv_rope_bf16", "simulate_act_quant"}
        d = {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "attention_bias": False,
             "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu", "num_key_value_heads": 1,
             "norm_topk_prob": True, "tie_word_embeddings": False, "topk_method": "noaux_tc",
             "torch_dtype": "bfloat16", "max_position_embeddings": 1048576}
        for key, value in self.to_dict().items():
            if key not in skip:
                d[inverse.get(key, key)] = value
        d["rope_scaling"] = {"type": "yarn", "factor": self.rope_factor, "beta_fast": self.beta_fast,
                             "beta_slow": self.beta_slow, "original_max_position_embeddings": self.original_seq_len}
        if self.dtype == "fp8":
            d["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                        "scale_fmt": self.scale_fmt, "weight_block_size": [128, 128]}
        if self.expert_dtype is None:
            d.pop("expert_dtype")
        return d

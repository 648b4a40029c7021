"""`EngineConfig`: the engine's sizes and limits, one typed object."""

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 16
    """Requests running at once at most."""
    max_num_batched_tokens: int = 512
    """Token budget of one step: prefill chunks plus one token per decoding request."""
    block_size: int = 128
    """Tokens of context per KV block (a multiple of 128, the HCA ratio)."""
    num_blocks: int = 512
    """KV blocks in the cache, allocated up front (ignored when kv_cache_gib is set)."""
    kv_cache_gib: float | None = None
    """KV cache memory in GiB: num_blocks becomes what fits after the fixed part of max_num_seqs requests (their
    window rings and compressor state), as `dsv4 kv-plan` counts it."""
    max_model_len: int = 1 << 20
    """Prompt + max_tokens of one request at most."""
    decode_threads: int | None = None
    """Intra-op threads for steps that only decode (None: torch's setting, as for prefill), like llama.cpp's
    --threads beside --threads-batch. A small model's decode ops are too small to split: the tiny preset decodes
    at 4K in 17.8 ms/token on one thread and 27.1 on two."""
    dtype: str = "float32"
    """Model compute dtype: float32 or bfloat16."""
    prefix_cache_size: int = 0
    """Slot copies kept at prompt block boundaries for prefix sharing between requests (0: no sharing)."""
    grammar_warmup: bool = False
    """Build the grammar tokenizer (llguidance's view of the vocabulary: ~8 s for V4's 129K tokens) on a worker thread
    at start, not in the engine's loop when the first constrained request arrives (a server sets it)."""
    speculative: bool = False
    """MTP speculative decoding: greedy requests draft one token with the MTP layer, verified in the next step."""
    compile: bool = False
    """Decode steps run as one graph compiled by torch.compile (`DecodeGraph`: static shapes, batch and table width
    bucketed); prefill and speculative verification stay eager. Each new (batch, context) bucket compiles once per
    process; inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, default ~/.cache/dsv4/inductor) keeps restarts
    faster. Off by default until measured faster than eager on a quiet machine. Numerics: inductor orders float32
    reductions differently (~1e-7); with the FP8 rounding of cached KV entries simulated some of those flip an FP8
    step, so logits drift from eager's (~1e-2 on a random test model) and greedy output can part at near-ties;
    without that rounding the two agree to float32 roundoff."""
    speculative_max_batch: int = 1
    """Drafts are verified only while at most this many greedy requests decode in a step (verifying takes one
    2-token forward per request); with more, they decode as one batch and keep drafting for when load drops."""

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_blocks", "max_model_len",
                     "speculative_max_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.decode_threads is not None and self.decode_threads <= 0:
            raise ValueError(f"decode_threads must be positive or None; got {self.decode_threads}")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be positive; got {self.kv_cache_gib}")
        if self.prefix_cache_size < 0:
            raise ValueError(f"prefix_cache_size must be >= 0; got {self.prefix_cache_size}")
        if self.block_size % 128:
            raise ValueError(f"block_size must be a multiple of 128; got {self.block_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

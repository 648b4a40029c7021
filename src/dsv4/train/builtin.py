"""The built-in trained model's size: V4's fixed shapes (head_dim 512, RoPE dim 64, window 128, compress ratios
4 and 128, 4 hyper-connection streams, one MTP layer, a hash-routed first layer) with width, depth, experts and
vocabulary shrunk to what a 2-core CPU trains in about two hours. Weights are BF16 (no FP8/FP4 formats: the
GEMM inputs are not rounded, and training needs no quantized weights), the KV-cache formats are V4's."""

from dsv4.model import ModelConfig

BUILTIN = ModelConfig(
    vocab_size=4096, dim=128, moe_inter_dim=128, n_layers=4, n_hash_layers=1, n_mtp_layers=1, n_heads=2,
    n_routed_experts=6, n_activated_experts=2, route_scale=1.5, q_lora_rank=64, o_groups=2, o_lora_rank=64,
    index_n_heads=4, index_head_dim=128, index_topk=64, compress_ratios=(0, 4, 128, 4, 0),
    dtype="bf16", scale_fmt=None, expert_dtype=None,
)


def window_only(config: ModelConfig) -> ModelConfig:
    """The control: the same model with every layer window-only (no compressed entries, no indexer)."""
    return config.replace(compress_ratios=(0,) * config.n_all_layers)

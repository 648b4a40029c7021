"""Named configurations: the released V4-Flash and V4-Pro values, and tiny test models.

The tiny presets keep the architecture's fixed sizes (head_dim 512, rope dim 64, window 128, compress ratios
4/128, 4 hyper-connection streams) and shrink width, depth, experts and (for tests) vocabulary.
"""

from .config import ModelConfig

FLASH = ModelConfig(
    vocab_size=129280, dim=4096, moe_inter_dim=2048, n_layers=43, n_hash_layers=3, n_mtp_layers=1, n_heads=64,
    n_routed_experts=256, n_activated_experts=6, route_scale=1.5, swiglu_limit=10.0, q_lora_rank=1024,
    o_groups=8, o_lora_rank=1024, index_n_heads=64, index_head_dim=128, index_topk=512,
    compress_ratios=(0, 0) + (4, 128) * 20 + (4, 0),
)
PRO = ModelConfig(
    vocab_size=129280, dim=7168, moe_inter_dim=3072, n_layers=61, n_hash_layers=3, n_mtp_layers=1, n_heads=128,
    n_routed_experts=384, n_activated_experts=6, route_scale=2.5, swiglu_limit=10.0, q_lora_rank=1536,
    o_groups=16, o_lora_rank=1024, index_n_heads=64, index_head_dim=128, index_topk=1024,
    compress_ratios=(128, 128) + (4, 128) * 29 + (4, 0),
)
# Covers the real tokenizer (vocab 129280): the default random-weight model of `dsv4 init-checkpoint`.
TINY = ModelConfig(
    vocab_size=129280, dim=128, moe_inter_dim=128, n_layers=4, n_hash_layers=1, n_mtp_layers=1, n_heads=2,
    n_routed_experts=8, n_activated_experts=2, route_scale=1.5, q_lora_rank=128, o_groups=2, o_lora_rank=128,
    index_n_heads=4, index_head_dim=128, index_topk=64, compress_ratios=(0, 4, 128, 4, 0),
)
# Small vocabulary for fast numerics tests.
TEST = TINY.replace(vocab_size=512)

PRESETS = {"v4-flash": FLASH, "v4-pro": PRO, "tiny": TINY, "test": TEST}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]

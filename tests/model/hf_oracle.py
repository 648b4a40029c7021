"""HF transformers' `deepseek_v4` as a test oracle: the same weights, renamed to HF's layout."""

import re

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

from dsv4.model import ModelConfig, Transformer

RENAMES = [  # official checkpoint name pattern -> HF name (applied in order, first match wins)
    (r"^embed\.weight$", "model.embed_tokens.weight"),
    (r"^head\.weight$", "lm_head.weight"),
    (r"^norm\.weight$", "model.norm.weight"),
    (r"^hc_head_(fn|base|scale)$", r"model.hc_head.hc_\1"),
    (r"^layers\.(\d+)\.attn_norm\.", r"model.layers.\1.input_layernorm."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^layers\.(\d+)\.hc_(attn|ffn)_(fn|base|scale)$", r"model.layers.\1.\2_hc.\3"),
    (r"^layers\.(\d+)\.attn\.attn_sink$", r"model.layers.\1.self_attn.sinks"),
    (r"^layers\.(\d+)\.attn\.indexer\.compressor\.(.*)$", r"model.layers.\1.self_attn.compressor.indexer.C.\2"),
    (r"^layers\.(\d+)\.attn\.indexer\.weights_proj\.",
     r"model.layers.\1.self_attn.compressor.indexer.scorer.weights_proj."),
    (r"^layers\.(\d+)\.attn\.indexer\.wq_b\.", r"model.layers.\1.self_attn.compressor.indexer.q_b_proj."),
    (r"^layers\.(\d+)\.attn\.compressor\.(.*)$", r"model.layers.\1.self_attn.compressor.C.\2"),
    (r"^layers\.(\d+)\.attn\.", r"model.layers.\1.self_attn."),
    (r"^layers\.(\d+)\.ffn\.gate\.bias$", r"model.layers.\1.mlp.gate.e_score_correction_bias"),
    (r"^layers\.(\d+)\.ffn\.shared_experts\.w1\.", r"model.layers.\1.mlp.shared_experts.gate_proj."),
    (r"^layers\.(\d+)\.ffn\.shared_experts\.w2\.", r"model.layers.\1.mlp.shared_experts.down_proj."),
    (r"^layers\.(\d+)\.ffn\.shared_experts\.w3\.", r"model.layers.\1.mlp.shared_experts.up_proj."),
    (r"^layers\.(\d+)\.ffn\.gate\.", r"model.layers.\1.mlp.gate."),
]
LEAVES = {"C.wkv.weight": "kv_proj.weight", "C.wgate.weight": "gate_proj.weight", "C.ape": "position_bias",
          "C.norm.weight": "kv_norm.weight", "wq_a.weight": "q_a_proj.weight", "q_norm.weight": "q_a_norm.weight",
          "wq_b.weight": "q_b_proj.weight", "wkv.weight": "kv_proj.weight", "wo_a.weight": "o_a_proj.weight",
          "wo_b.weight": "o_b_proj.weight"}


def hf_config(c: ModelConfig) -> DeepseekV4Config:
    return DeepseekV4Config(
        vocab_size=c.vocab_size, hidden_size=c.dim, moe_intermediate_size=c.moe_inter_dim,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, head_dim=c.head_dim,
        q_lora_rank=c.q_lora_rank, num_experts_per_tok=c.n_activated_experts, n_routed_experts=c.n_routed_experts,
        routed_scaling_factor=c.route_scale, rope_theta=c.rope_theta, compress_rope_theta=c.compress_rope_theta,
        compress_ratios=list(c.compress_ratios), num_hash_layers=c.n_hash_layers, qk_rope_head_dim=c.rope_head_dim,
        hc_mult=c.hc_mult, hc_sinkhorn_iters=c.hc_sinkhorn_iters, hc_eps=c.hc_eps, swiglu_limit=c.swiglu_limit,
        sliding_window=c.window_size, o_groups=c.o_groups, o_lora_rank=c.o_lora_rank,
        index_n_heads=c.index_n_heads, index_head_dim=c.index_head_dim, index_topk=c.index_topk,
        rms_norm_eps=c.norm_eps, max_position_embeddings=1 << 20,
        rope_parameters={"rope_type": "yarn", "factor": c.rope_factor, "beta_fast": c.beta_fast,
                         "beta_slow": c.beta_slow, "original_max_position_embeddings": c.original_seq_len},
    )


def hf_name(name: str) -> str:
    for pattern, target in RENAMES:
        if re.match(pattern, name):
            name = re.sub(pattern, target, name)
            break
    for leaf, target in LEAVES.items():
        if name.endswith("." + leaf):
            return name[: -len(leaf)] + target
    return name


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    out, experts = {}, {}
    for name, p in model.state_dict().items():
        if name.startswith("mtp."):
            continue  # HF does not instantiate the MTP layer
        m = re.match(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight$", name)
        if m:
            experts.setdefault(int(m[1]), {}).setdefault(m[3], {})[int(m[2])] = p
            continue
        out[hf_name(name)] = p.long() if name.endswith("tid2eid") else p
    for layer, ws in experts.items():
        stack = {k: torch.stack([v[i] for i in sorted(v)]) for k, v in ws.items()}
        out[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.cat([stack["w1"], stack["w3"]], dim=1)
        out[f"model.layers.{layer}.mlp.experts.down_proj"] = stack["w2"]
    return out


def hf_model(model: Transformer) -> DeepseekV4ForCausalLM:
    config = hf_config(model.config)
    config._attn_implementation = "eager"
    hf = DeepseekV4ForCausalLM(config).float().eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    if missing or unexpected:
        raise AssertionError(f"HF weight mapping incomplete: missing={missing} unexpected={unexpected}")
    return hf

"""Mixture of experts: a gate routing each token to `n_activated_experts` routed experts plus one shared expert.

Gate: affinity = sqrt(softplus(x Wᵀ)) (float32). Score layers select the top-k of affinity + bias (the bias only
steers selection); the first `n_hash_layers` take the expert ids from the fixed table `tid2eid[token_id]`.
Routing weights are the chosen affinities, renormalized to sum 1, times `route_scale`. Experts are SwiGLU
with the gate clamped to <= swiglu_limit and the up projection to [-limit, limit].
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .linear import Linear


class Gate(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.topk, self.score_func, self.route_scale = (config.n_activated_experts, config.score_func,
                                                        config.route_scale)
        self.hash = config.is_hash_layer(layer_id)
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.dim, dtype=dtype), requires_grad=False)
        if self.hash:
            tid2eid = torch.zeros(config.vocab_size, config.n_activated_experts, dtype=torch.int32)
            self.tid2eid = nn.Parameter(tid2eid, requires_grad=False)
        else:
            bias = torch.zeros(config.n_routed_experts, dtype=torch.float32)
            self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [t,dim], input_ids: [t] -> weights [t,k] float32, indices [t,k]
        scores = F.linear(x.float(), self.weight.float())
        if self.score_func == "softmax":
            scores = scores.softmax(dim=-1)
        elif self.score_func == "sigmoid":
            scores = scores.sigmoid()
        else:
            scores = F.softplus(scores).sqrt()
        if self.hash:
            indices = self.tid2eid[input_ids].long()
        else:
            indices = (scores + self.bias).topk(self.topk, dim=-1).indices
        weights = scores.gather(1, indices)
        if self.score_func != "softmax":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.route_scale, indices


class Expert(nn.Module):
    """SwiGLU FFN computed in float32: w2(silu(clamp(w1 x)) · clamp(w3 x))."""

    def __init__(self, dim: int, inter_dim: int, dtype: torch.dtype, swiglu_limit: float, act_quant: bool):
        super().__init__()
        self.w1 = Linear(dim, inter_dim, dtype, act_quant)
        self.w2 = Linear(inter_dim, dim, dtype, act_quant)
        self.w3 = Linear(dim, inter_dim, dtype, act_quant)
        self.swiglu_limit = swiglu_limit

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        # x: [t,dim], weights: [t,1] -> [t,dim]
        gate, up = self.w1(x).float(), self.w3(x).float()
        if self.swiglu_limit > 0:
            up = up.clamp(-self.swiglu_limit, self.swiglu_limit)
            gate = gate.clamp(max=self.swiglu_limit)
        h = F.silu(gate) * up
        if weights is not None:
            h = weights * h
        return self.w2(h.to(x.dtype))


class MoE(nn.Module):
    def __init__(self, layer_id: int, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        c = config
        self.dim, self.n_routed_experts = c.dim, c.n_routed_experts
        self.gate = Gate(layer_id, c, dtype)
        self.experts = nn.ModuleList(
            [Expert(c.dim, c.moe_inter_dim, dtype, c.swiglu_limit, c.rounds_input(c.expert_format))
             for _ in range(c.n_routed_experts)])
        self.shared_experts = Expert(c.dim, c.moe_inter_dim, dtype, c.swiglu_limit, c.rounds_input(c.dtype))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # x: [b,s,dim], input_ids: [b,s] -> [b,s,dim]
        shape = x.shape
        x = x.reshape(-1, self.dim)
        weights, indices = self.gate(x, input_ids.flatten())
        y = torch.zeros_like(x, dtype=torch.float32)
        counts = torch.bincount(indices.flatten(), minlength=self.n_routed_experts).tolist()
        for i, count in enumerate(counts):
            if count:
                token, slot = torch.where(indices == i)
                y.index_add_(0, token, self.experts[i](x[token], weights[token, slot, None]).float())
        y = y + self.shared_experts(x).float()
        return y.to(x.dtype).view(shape)

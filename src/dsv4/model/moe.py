"""Mixture of experts: a gate routing each token to `n_activated_experts` routed experts plus one shared expert.

Gate: affinity = sqrt(softplus(x Wᵀ)) (float32). Score layers select the top-k of affinity + bias (the bias only
steers selection); the first `n_hash_layers` take the expert ids from the fixed table `tid2eid[token_id]`.
Routing weights are the chosen affinities, renormalized to sum 1, times `route_scale`. Experts are SwiGLU
with the gate clamped to <= swiglu_limit and the up projection to [-limit, limit].

Eager, each expert runs on the tokens routed to it (a host read of the routing). Inside a compiled graph (fixed
shapes) the (token, slot) pairs are sorted by expert and their input rows gathered, in the graph; the products run
in `grouped_linear`, an opaque custom op that multiplies each expert's run of rows by that expert's matrix in the
stacked bank (`MoE.stack_experts`), in place: no expert weight is copied, and each chosen expert is read once
per step however many tokens chose it. (Gathering a [tokens, k, out, in] weight tensor instead copied
3·k expert matrices per token: 6 x 3 x 2048 x 4096 values per token and layer at V4-Flash's size.) Its products are
the eager path's own: the same rows, in the same order, through the same matrix product.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dsv4 import kernels

from .config import ModelConfig
from .linear import Linear, linear


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
        h = swiglu(self.w1(x).float(), self.w3(x).float(), self.swiglu_limit)
        if weights is not None:
            h = weights * h
        return self.w2(h.to(x.dtype))


def swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float) -> torch.Tensor:
    # gate, up: [..., inter] float32 -> silu(clamp(gate)) · clamp(up)
    if limit > 0:
        up = up.clamp(-limit, limit)
        gate = gate.clamp(max=limit)
    return F.silu(gate) * up


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
        self.bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see stack_experts

    def stack_experts(self):
        """Stacks the routed experts' weights into `bank` (w1, w2, w3 as [E,out,in]) and makes each expert's weight
        a view of it, so the bank is no second copy. Once, after loading and placing the weights (a later `.to()`
        would move the experts' views but not the bank)."""
        if self.bank is not None:
            return
        bank = []
        for name in ("w1", "w2", "w3"):
            linears = [getattr(e, name) for e in self.experts]
            stacked = torch.stack([lin.weight.detach() for lin in linears])
            for lin, w in zip(linears, stacked, strict=True):
                lin.weight = nn.Parameter(w, requires_grad=False)
            bank.append(stacked)
        self.bank = tuple(bank)

    def compact_experts_(self) -> bool:
        """The stacked bank held in BF16 when that keeps every value exactly (dequantized FP4 / FP8 experts: see
        Linear.compact_), each expert's weights views of it again; True if it was."""
        if self.bank is None or any(w.dtype != torch.float32 for w in self.bank):
            return False
        half = tuple(w.to(torch.bfloat16) for w in self.bank)
        if not all(torch.equal(h.float(), w) for h, w in zip(half, self.bank, strict=True)):
            return False
        for name, stacked in zip(("w1", "w2", "w3"), half, strict=True):
            for e, w in zip(self.experts, stacked, strict=True):
                getattr(e, name).weight = nn.Parameter(w, requires_grad=False)
        self.bank = half
        return True

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # x: [b,s,dim], input_ids: [b,s] -> [b,s,dim]
        shape = x.shape
        x = x.reshape(-1, self.dim)
        weights, indices = self.gate(x, input_ids.flatten())
        if torch.compiler.is_compiling():
            y = self._grouped(x, weights, indices) + self.shared_experts(x).float()
            return y.to(x.dtype).view(shape)
        y = torch.zeros_like(x, dtype=torch.float32)
        counts = torch.bincount(indices.flatten(), minlength=self.n_routed_experts).tolist()
        for i, count in enumerate(counts):
            if count:
                token, slot = torch.where(indices == i)
                y.index_add_(0, token, self.experts[i](x[token], weights[token, slot, None]).float())
        y = y + self.shared_experts(x).float()
        return y.to(x.dtype).view(shape)

    def _grouped(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """x [t,dim], routing weights and expert ids [t,k] -> the routed experts' sum [t,dim] float32, with fixed
        shapes (t·k pairs): the pairs sorted by expert (stable: each expert's tokens in order, as eager takes
        them), their products run by `grouped_linear` on the stacked bank, summed back per token in expert order
        as eager's index_add_ does."""
        if self.bank is None:
            raise RuntimeError("a compiled MoE needs its experts stacked first (MoE.stack_experts)")
        w1, w2, w3 = self.bank
        flat = indices.flatten()  # [t·k]
        order = flat.argsort(stable=True)
        experts, token = flat[order], order // indices.size(1)
        first = self.experts[0]
        xs = first.w1.prepare(x)[token]  # [t·k,dim] (the rounding is per row: rows round as eager's x[token])
        mm = grouped_mm if x.is_cuda and xs.dtype == w1.dtype else kernels.op("grouped_linear", xs) or grouped_linear
        h = swiglu(mm(xs, w1, experts).float(), mm(xs, w3, experts).float(),
                   first.swiglu_limit)
        h = first.w2.prepare((weights.flatten()[order, None] * h).to(x.dtype))
        out = mm(h, w2, experts).float()  # [t·k,dim]
        return torch.zeros_like(x, dtype=torch.float32).index_add_(0, token, out)


@torch.library.custom_op("dsv4::grouped_linear", mutates_args=())
def grouped_linear(x: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """x [n,in] with the group of each row, groups [n] (non-decreasing), weight [g,out,in] -> [n,out]: each run of
    rows times its group's matrix (x Wᵀ, the product F.linear runs), read in place. Opaque to the compiler: it
    reads the runs to the host, as eager routing does (a GPU would run torch._grouped_mm here instead: BF16 only,
    which is also why it cannot serve a float32 model)."""
    out = x.new_empty(x.size(0), weight.size(1))
    ids = groups.tolist()  # (one host read of t·k ids: fewer dispatched ops than unique_consecutive and two reads)
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or ids[end] != ids[start]:
            if weight.dtype == x.dtype:
                torch.mm(x[start:end], weight[ids[start]].t(), out=out[start:end])
            else:  # a compact (BF16) bank: see compact_experts_
                out[start:end] = linear(x[start:end], weight[ids[start]])
            start = end
    return out


def grouped_mm(x: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """`grouped_linear`'s product with no host read, the MoE's path on a GPU: each group's end row is found on the
    device (searchsorted over the sorted ids) and torch._grouped_mm multiplies the runs, so a CUDA graph can
    capture the step. x and the bank in one dtype (on a GPU: BF16)."""
    ends = torch.searchsorted(groups, torch.arange(weight.size(0), device=groups.device), right=True)
    return torch._grouped_mm(x, weight.transpose(1, 2), offs=ends.to(torch.int32))


@grouped_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.size(0), weight.size(1))

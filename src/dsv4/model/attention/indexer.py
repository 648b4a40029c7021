"""Lightning `Indexer`: picks, per query, the top-k compressed entries of a ratio-4 (CSA) layer.

Queries come from the attention's query latent: q = wq_b(qr) [b,s,h,128], RoPE on the last 64 dims, Hadamard,
MXFP4 simulation. Keys come from the indexer's own compressor (Hadamard + MXFP4 inside). Score of entry t for
query s: Σ_h w[s,h] · ReLU(q[s,h] · k[t]) with w = weights_proj(x) · 128^-0.5 · h^-0.5; entries not yet complete
for the query are excluded, then top-k with k = min(index_topk, #entries).
"""

import torch
from torch import nn

from ..cache import CompressorState
from ..config import ModelConfig
from ..linear import Linear
from ..quant import fp4_round, hadamard
from ..rope import Rope
from .compressor import Compressor


class Indexer(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, ratio: int = 4):
        super().__init__()
        self.n_heads, self.head_dim, self.ratio = config.index_n_heads, config.index_head_dim, ratio
        self.index_topk = config.index_topk
        self.simulate = config.simulate_kv_quant
        self.wq_b = Linear(config.q_lora_rank, self.n_heads * self.head_dim, dtype, config.simulate_act_quant)
        self.weights_proj = Linear(config.dim, self.n_heads, dtype)
        self.compressor = Compressor(config, ratio, self.head_dim, rotate=True)
        self.rope = Rope(config, compressed=True)
        self.softmax_scale = self.head_dim**-0.5

    def forward(self, x: torch.Tensor, qr: torch.Tensor, start_pos: int, state: CompressorState) -> torch.Tensor:
        """x [b,s,dim], qr [b,s,q_lora_rank] -> selected [b,s,n] bool over the n entries available so far."""
        b, s, _ = x.shape
        positions = torch.arange(start_pos, start_pos + s, device=x.device)
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))  # [b,s,h,d]
        q = hadamard(self.rope(q, positions))
        if self.simulate:
            q = fp4_round(q, 32)
        n = self.compressor(x, start_pos, state)
        keys = state.entries[:b, :n]  # [b,n,d]
        weights = self.weights_proj(x).float() * (self.softmax_scale * self.n_heads**-0.5)  # [b,s,h]
        scores = torch.cat([index_scores(q[:, i:i + 256], keys, weights[:, i:i + 256])
                            for i in range(0, s, 256)], dim=1)  # [b,s,n]
        visible = entry_visible(positions, n, self.ratio)  # [s,n]
        scores = scores.masked_fill(~visible, float("-inf"))
        k = min(self.index_topk, n)
        selected = torch.zeros_like(scores, dtype=torch.bool)
        if k:
            selected.scatter_(-1, scores.topk(k, dim=-1).indices, True)
        return selected & visible


    def step(self, x: torch.Tensor, qr: torch.Tensor, pos: torch.Tensor, state: CompressorState) -> torch.Tensor:
        """One decode token per row: x [b,1,dim], qr [b,1,q_lora_rank] at positions pos [b] -> the top-k entries
        of each row [b,k] (k = min(index_topk, most entries of any row)), -1 where a row has fewer."""
        b = x.size(0)
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))  # [b,1,h,d]
        q = hadamard(self.rope(q, pos[:, None]))
        if self.simulate:
            q = fp4_round(q, 32)
        n = self.compressor.step(x, pos, state)  # [b]
        entries, visible = all_entries(n)  # [b,t]
        rows = torch.arange(b, device=x.device)[:, None]
        weights = self.weights_proj(x).float() * (self.softmax_scale * self.n_heads**-0.5)  # [b,1,h]
        scores = index_scores(q, state.entries[rows, entries], weights)[:, 0]  # [b,t]
        scores = scores.masked_fill(~visible, float("-inf"))
        top = scores.topk(min(self.index_topk, scores.size(1)), dim=-1)
        return top.indices.masked_fill(top.values == float("-inf"), -1)


def all_entries(n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry counts per row n [b] -> (entry numbers [b,t], visible [b,t]) over t = max(n) columns; columns past a
    row's count read its entry 0 (always a valid address) and are not visible."""
    t = torch.arange(int(n.max()), device=n.device).expand(n.size(0), -1)
    visible = t < n[:, None]
    return t.masked_fill(~visible, 0), visible


def entry_visible(positions: torch.Tensor, n: int, ratio: int) -> torch.Tensor:
    """[s] query positions -> [s,n]: entry i (tokens i·ratio .. i·ratio+ratio-1) is complete for query t
    iff (i+1)·ratio <= t+1."""
    entries = torch.arange(n, device=positions.device)
    return (entries[None, :] + 1) * ratio <= positions[:, None] + 1


def index_scores(q: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """q [b,s,h,d], keys [b,n,d], weights [b,s,h] -> Σ_h w·ReLU(q·k) [b,s,n]."""
    scores = torch.einsum("bshd,btd->bsht", q.float(), keys.float()).relu()
    return (scores * weights.unsqueeze(-1)).sum(dim=2)

"""Optimizers as V4 was trained: Muon (`torch.optim.Muon`) for the 2-D projection matrices, AdamW for the rest
(embedding, lm head, norms, hyper-connection mixes, attention sinks, compressor position biases, router), and the
auxiliary-loss-free expert balancing: each score-routed gate's bias moves up for under-loaded experts and down for
over-loaded ones (the bias only steers selection; it gets no gradient)."""

import torch
from torch import nn

from dsv4.model import Transformer
from dsv4.model.moe import Gate

ADAMW_MATRICES = ("embed.weight", "head.weight", "gate.weight", "_fn", "ape")


def trained_parameters(model: Transformer) -> dict[str, nn.Parameter]:
    """Every floating-point parameter but the routing biases, switched to requires_grad."""
    params = {}
    for name, p in model.named_parameters():
        trained = p.is_floating_point() and not name.endswith("gate.bias")
        p.requires_grad_(trained)
        if trained:
            params[name] = p
    return params


def optimizers(model: Transformer, lr: float, weight_decay: float = 0.01) -> list[torch.optim.Optimizer]:
    params = trained_parameters(model)
    muon = [p for n, p in params.items() if p.ndim == 2 and not n.endswith(ADAMW_MATRICES)]
    adamw = [p for n, p in params.items() if p.ndim != 2 or n.endswith(ADAMW_MATRICES)]
    return [torch.optim.Muon(muon, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"),
            torch.optim.AdamW(adamw, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))]


class ExpertBalancer:
    """Counts each score-routed gate's expert choices during forwards; `update()` moves the biases by `speed`
    against the load imbalance (sign of mean load - load) and resets the counts."""

    def __init__(self, model: Transformer, speed: float = 1e-3):
        self.speed = speed
        self.gates = [m for m in model.modules() if isinstance(m, Gate) and not m.hash]
        self.counts = [torch.zeros(g.bias.numel()) for g in self.gates]
        self.handles = [g.register_forward_hook(self._hook(i)) for i, g in enumerate(self.gates)]

    def _hook(self, i: int):
        def count(module, args, output):
            _, indices = output
            self.counts[i] += torch.bincount(indices.flatten().cpu(), minlength=self.counts[i].numel())
        return count

    @torch.no_grad()
    def update(self) -> float:
        """Applies and resets; returns the worst max-load / mean-load ratio seen since the last update."""
        worst = 0.0
        for gate, counts in zip(self.gates, self.counts, strict=True):
            if counts.sum() == 0:
                continue
            mean = counts.mean()
            gate.bias += self.speed * torch.sign(mean - counts).to(gate.bias)
            worst = max(worst, float(counts.max() / mean))
            counts.zero_()
        return worst

    def close(self):
        for h in self.handles:
            h.remove()

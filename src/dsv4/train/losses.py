"""The training objective: next-token cross-entropy on the assistant's tokens, the MTP layer's cross-entropy on
the token after next, and the indexer's KL (it reaches only the indexer: its inputs are detached)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import IGNORE
from .forward import TrainOutput


@dataclass
class Losses:
    lm: torch.Tensor
    mtp: torch.Tensor
    index_kl: torch.Tensor

    def total(self, mtp_weight: float) -> torch.Tensor:
        return self.lm + mtp_weight * self.mtp + self.index_kl

    def items(self) -> dict[str, float]:
        return {"lm": self.lm.item(), "mtp": self.mtp.item(), "index_kl": self.index_kl.item()}


def losses(out: TrainOutput, targets: torch.Tensor) -> Losses:
    """targets [b,s]: the next token at each trained position, IGNORE elsewhere."""
    if out.start:  # a shared prefix: its positions (and the MTP layers' predictions from them) carry no loss
        reach = out.start + len(out.mtp_logits)
        if (targets[:, :reach] != IGNORE).any():
            raise ValueError(f"targets within the shared prefix's first {reach} positions: it is trained on")
        targets = targets[:, out.start:]
    lm = _ce(out.logits, targets)
    # MTP depth k at position t predicts token t+k+2, which is the main target of position t+k+1
    mtp = [_ce(logits, targets[:, k + 1:]) for k, logits in enumerate(out.mtp_logits)]
    zero = lm.new_zeros(())
    kl = out.stats.index_kl
    return Losses(lm, torch.stack(mtp).mean() if mtp else zero, torch.stack(kl).mean() if kl else zero)


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # logits [b,s,V], targets [b,s] -> mean over the trained positions (0 if there are none)
    if not (targets != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

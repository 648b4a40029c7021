"""`Sampler`: next tokens from last-position logits, per request: greedy, temperature, top-k, top-p, seed,
log-probabilities, and a grammar's allowed tokens (`constraint.py` computes them)."""

import torch

from .output import TokenLogprob
from .sampling_params import SamplingParams


class Sampler:
    def __init__(self):
        self.generators: dict[int, torch.Generator] = {}

    def generator(self, seq_id: int, params: SamplingParams) -> torch.Generator:
        if seq_id not in self.generators:
            g = torch.Generator()
            if params.seed is None:
                g.seed()
            else:
                g.manual_seed(params.seed)
            self.generators[seq_id] = g
        return self.generators[seq_id]

    def release(self, seq_id: int):
        self.generators.pop(seq_id, None)

    def __call__(self, logits: torch.Tensor, seq_ids: list[int], params: list[SamplingParams],
                 allowed: list[torch.Tensor | None] | None = None):
        """logits [b,vocab] float32 -> (token ids [b], per row a TokenLogprob or None). `allowed`: per row None or a
        bool [vocab] mask of the tokens a grammar allows (the others get probability 0; logprobs stay the model's)."""
        logits = logits.float()
        model_logits = logits
        if allowed is not None and any(a is not None for a in allowed):
            logits = logits.clone()
            for row, a in zip(logits, allowed, strict=True):
                if a is not None:
                    row[: a.numel()].masked_fill_(~a.to(row.device), float("-inf"))
        greedy = [i for i, p in enumerate(params) if p.greedy]
        best = dict(zip(greedy, logits[greedy].argmax(-1).tolist(), strict=True)) if greedy else {}  # one call
        tokens, logprobs = [], []
        for i, (row, seq_id, p) in enumerate(zip(logits, seq_ids, params, strict=True)):
            token = best[i] if p.greedy else self._draw(row, p, self.generator(seq_id, p))
            tokens.append(token)
            logprobs.append(None if p.logprobs is None else token_logprob(model_logits[i], token, p.logprobs))
        return tokens, logprobs

    def _draw(self, row: torch.Tensor, p: SamplingParams, g: torch.Generator) -> int:
        # row [vocab] -> one token from softmax(row / T) restricted to top-k, then to the top-p nucleus. Only the
        # nucleus needs the tokens in order, and top-k only its k: sorting all 129K every token cost ~15 ms.
        probs = (row / p.temperature).softmax(-1)
        if not p.top_k and p.top_p == 1:
            return int(torch.multinomial(probs, 1, generator=g))
        probs, ids = probs.topk(min(p.top_k, probs.numel())) if p.top_k else probs.sort(descending=True)
        if p.top_p < 1:
            before = probs.cumsum(-1) - probs  # mass of the more likely tokens
            keep = before < p.top_p * probs.sum()
            probs, ids = probs[keep], ids[keep]
        return int(ids[torch.multinomial(probs, 1, generator=g)])


def token_logprob(row: torch.Tensor, token: int, n_top: int) -> TokenLogprob:
    """The model's log-probability of `token` and the `n_top` most likely tokens (before any sampling rule)."""
    lp = row.log_softmax(-1)
    top = lp.topk(n_top) if n_top else None
    alternatives = dict(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else {}
    return TokenLogprob(token, float(lp[token]), alternatives)

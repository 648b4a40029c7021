"""The sampler draws from the distribution its parameters define: softmax(logits / T), cut to the top k tokens
and then to the smallest nucleus reaching top_p; greedy rows take the argmax. Frequencies over many seeded draws
against the exact probabilities."""

import pytest
import torch

from dsv4.engine.sampler import Sampler
from dsv4.engine.sampling_params import SamplingParams

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def _expected(temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    probs = (LOGITS / temperature).softmax(-1)
    order = probs.argsort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    mass = 0.0
    for rank, i in enumerate(order.tolist()):
        if (top_k and rank >= top_k) or mass >= top_p * probs[order[:top_k or None]].sum():
            break
        keep[i], mass = True, mass + float(probs[i])
    return torch.where(keep, probs, 0) / probs[keep].sum()


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 3, 1.0),
                                                       (1.0, 0, 0.8), (1.5, 4, 0.9)])
def test_frequencies_match_the_distribution(temperature, top_k, top_p):
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=7)
    sampler, n = Sampler(), 6000
    tokens, _ = sampler(LOGITS.expand(n, -1), [0] * n, [params] * n)  # one request's generator, n draws
    freq = torch.bincount(torch.tensor(tokens), minlength=len(LOGITS)).float() / n
    expected = _expected(temperature, top_k, top_p)
    assert (freq - expected).abs().max() < 0.02, (freq, expected)
    assert (freq[expected == 0] == 0).all()  # never outside the top-k / nucleus


def test_greedy_rows_take_the_argmax_beside_sampled_ones():
    logits = torch.stack([LOGITS, LOGITS.flip(0), LOGITS])
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0), SamplingParams(temperature=1, seed=1)]
    tokens, _ = Sampler()(logits, [0, 1, 2], params)
    assert tokens[:2] == [0, len(LOGITS) - 1] and 0 <= tokens[2] < len(LOGITS)

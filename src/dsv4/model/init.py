"""Random weights for tests and `dsv4 init-checkpoint`: activations of order 1 in every branch, norms and
hyper-connection parameters away from their trivial values so that every path is exercised."""

import torch

from .config import ModelConfig
from .transformer import Transformer


@torch.no_grad()
def init_random_(model: Transformer, seed: int = 0) -> Transformer:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        p.copy_(random_tensor(name, tuple(p.shape), model.config, g).to(p.dtype))
    return model


def random_tensor(name: str, shape: tuple[int, ...], config: ModelConfig, g: torch.Generator) -> torch.Tensor:
    """Random float32 (int for tid2eid) values for the parameter `name` of the given shape."""
    leaf = name.rsplit(".", 1)[-1]

    def randn(std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std + mean

    if leaf == "tid2eid":
        n_experts = config.n_routed_experts
        return torch.rand(shape[0], n_experts, generator=g).argsort(dim=-1)[:, : shape[1]]
    if name == "embed.weight":
        return randn()
    if name.endswith("norm.weight"):
        return randn(0.1, 1.0)
    if leaf.endswith("_fn"):
        return randn(0.02)
    if leaf.endswith("_base"):
        return randn(0.1)
    if leaf.endswith("_scale"):
        return torch.rand(shape, generator=g) + 0.5
    if leaf in ("attn_sink", "bias"):
        return randn(0.5 if leaf == "attn_sink" else 0.1)
    if leaf == "ape":
        return randn(0.5)
    return randn(shape[-1] ** -0.5)  # linear weights, gate, head: unit-variance outputs

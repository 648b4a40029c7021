"""`Transformer`: embed -> hc_mult streams -> blocks -> hyper head -> norm -> lm head (+ MTP layers).

`model(input_ids, cache=cache, start_pos=p)` runs the tokens at positions p.. of each sequence (prefill of any
length, or decode steps) and returns the last position's logits [b, vocab] (all positions with
`all_logits=True`). For a decode step of requests at different positions, `start_pos` is a LongTensor [b] of
per-row positions and input_ids is [b,1].
"""

import torch
from torch import nn

from .block import Block, _param
from .cache import ModelCache
from .config import ModelConfig
from .hyper import hc_head
from .linear import Linear
from .mtp import MTPBlock
from .norm import RMSNorm


class Head(Linear):
    """The lm head, a float32 [vocab, dim] weight (BF16 in the checkpoint), multiplied in float32 as the reference
    does. BF16 holds its values exactly, so a compiled decode step holds it in BF16 (`Linear.compact_`): the same
    float32 products from half the bytes (V4's 129K x 7,168 head: 3.7 GB a token in float32)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__(dim, vocab_size, dtype=torch.float32)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        c = self.config = config
        self.dtype = dtype
        self.embed = nn.Embedding(c.vocab_size, c.dim, dtype=dtype)
        self.embed.weight.requires_grad_(False)
        self.layers = nn.ModuleList([Block(i, c, dtype) for i in range(c.n_layers)])
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.head = Head(c.vocab_size, c.dim)
        self.mtp = nn.ModuleList([MTPBlock(c.n_layers + i, c, dtype) for i in range(c.n_mtp_layers)])
        self.hc_head_fn = _param(c.hc_mult, c.hc_mult * c.dim)
        self.hc_head_base = _param(c.hc_mult)
        self.hc_head_scale = _param(1)

    def new_cache(self, batch_size: int = 1, max_seq_len: int = 4096) -> ModelCache:
        device = self.embed.weight.device
        return ModelCache(self.config, batch_size, max_seq_len, self.dtype, device)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: ModelCache | None = None, start_pos: int | torch.Tensor = 0,
                all_logits: bool = False) -> torch.Tensor:
        # input_ids: [b,s] -> logits [b,vocab] (or [b,s,vocab]) float32
        h = self.hidden(input_ids, cache, start_pos)
        return self.logits(h if all_logits else h[:, -1:])[:, slice(None) if all_logits else -1]

    @torch.inference_mode()
    def hidden(self, input_ids: torch.Tensor, cache: ModelCache | None = None,
               start_pos: int | torch.Tensor = 0) -> torch.Tensor:
        """input_ids [b,s] -> final hyper-connection streams [b,s,hc,d] (the MTP layer's input)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq]; got shape {tuple(input_ids.shape)}")
        b, s = input_ids.shape
        if isinstance(start_pos, torch.Tensor):
            start_pos = self._row_positions(start_pos, b, s, cache)
        if cache is None:
            if start_pos:
                raise ValueError(f"start_pos={start_pos} needs a cache holding the earlier tokens")
            cache = self.new_cache(b, s)
        if not torch.compiler.is_compiling():  # (reads per-row positions to the host: a compiled step checks before)
            cache.check(b, start_pos, s)
        h = self.embed(input_ids).unsqueeze(2).repeat(1, 1, self.config.hc_mult, 1)  # [b,s,hc,d]
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            h = layer(h, start_pos, input_ids, layer_cache)
        return h

    @staticmethod
    def _row_positions(start_pos: torch.Tensor, b: int, s: int, cache) -> torch.Tensor:
        if start_pos.shape != (b,) or s != 1:
            raise ValueError(f"per-row start_pos must be [batch]={b} with one token per row; got start_pos shape "
                             f"{tuple(start_pos.shape)} and {s} tokens per row")
        if cache is None:
            raise ValueError("per-row start_pos needs a cache holding the earlier tokens")
        return start_pos.long()

    def set_gathered_decode(self, enabled: bool):
        """Decode steps gather only the attended entries (default) or run the dense masked reference path."""
        for m in self.modules():
            if hasattr(m, "gathered_decode"):
                m.gathered_decode = enabled

    def set_gathered_prefill(self, enabled: bool):
        """Prefill attends per query to its gathered entries (default) or runs the dense masked reference path."""
        for m in self.modules():
            if hasattr(m, "gathered_prefill"):
                m.gathered_prefill = enabled

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        # h: [b,s,hc,d] -> [b,s,vocab] float32
        c = self.config
        x = hc_head(h, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, c.norm_eps, c.hc_eps)
        return self.head(self.norm(x))

    @torch.inference_mode()
    def mtp_logits(self, h: torch.Tensor, next_ids: torch.Tensor, cache: ModelCache, start_pos: int,
                   depth: int = 0) -> torch.Tensor:
        """MTP layer `depth`: main streams h [b,s,hc,d] at positions start_pos.. and the tokens that follow
        them [b,s] -> logits [b,s,vocab] for the token after each of next_ids."""
        return self.mtp[depth](h, start_pos, next_ids, cache.mtp[depth], self.embed, self.head)

"""Torch stand-ins for the kernels of DeepSeek's V4 `inference/kernel.py` (TileLang, GPU only), for running the
official `model.py` on CPU in `generate.py`. Written from the kernels' semantics, independently of `dsv4.model`:

- act_quant: FP8 e4m3 per `block_size` dims, scale amax/448 (clamped at 1e-4), a power of two (ceil of log2, from
  the float's bits) when scale_fmt is set; inplace=True writes the quant-dequant values back (cast through FP8
  since the kernel fix 553034d; the first release cast to the input dtype there and rounded nothing).
- fp4_act_quant: e2m1 per 32 dims, power-of-two scale amax/6 (amax clamped at 6·2^-126), round to nearest even.
- fp8_gemm / fp4_gemm: FP8 activations times FP8 (128x128 block scales) or FP4 (per-32 scales) weights, float32
  accumulation. `order="kernel"` accumulates one K block at a time and applies that block's scales (as the
  kernels do); `order="flat"` dequantizes both sides and runs one matmul: the same math summed in another order,
  which is how `generate.py` measures the official code's own noise floor.
- sparse_attn: attention over gathered key indices (-1 = none), K = V, the sink logit in the denominator only.
  The "flat" order scores two halves of the keys separately and merges them as an online softmax does.
- hc_split_sinkhorn: pre / post / comb of the hyper-connections, softmax rows then Sinkhorn-Knopp normalization.
- hadamard_transform: the Sylvester-ordered Walsh-Hadamard butterfly (fast_hadamard_transform's order).
"""

import types

import torch

FP8_MAX, FP4_MAX = 448.0, 6.0
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def pow2_round_up(x: torch.Tensor) -> torch.Tensor:
    """2 ** ceil(log2(x)) from the float32 bits of positive normal x: exponent, plus one if any mantissa bit."""
    bits = x.float().contiguous().view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) - 127 + ((bits & 0x7FFFFF) != 0).int()
    return ((exponent + 127) << 23).view(torch.float32)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    n = x.size(-1)
    if n % block:
        raise ValueError(f"last dim {n} is not a multiple of {block}")
    return x.float().unflatten(-1, (n // block, block))


def act_quant(x, block_size=128, scale_fmt=None, scale_dtype=torch.float32, inplace=False):
    xb = _blocks(x, block_size)
    s = xb.abs().amax(-1, keepdim=True).clamp_min(1e-4) * (1.0 / FP8_MAX)
    if scale_fmt is not None or scale_dtype == torch.float8_e8m0fnu:
        s = pow2_round_up(s)
    q = (xb / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    if inplace:
        x.copy_((q.float() * s).flatten(-2).to(x.dtype))
        return x
    return q.flatten(-2), s.squeeze(-1).to(scale_dtype)


def e2m1_round(m: torch.Tensor) -> torch.Tensor:
    """Nearest e2m1 value to each float32 in [-6, 6], ties to the even code."""
    d = (m.abs().unsqueeze(-1) - E2M1).abs().double()
    odd = (torch.arange(8) % 2).double()
    code = (d + odd * 1e-9).argmin(-1)  # exact distances; among equal ones the even code wins
    return E2M1[code].copysign(m)


def fp4_act_quant(x, block_size=32, inplace=False):
    if not inplace:
        raise NotImplementedError("model.py calls fp4_act_quant in place only")
    xb = _blocks(x, block_size)
    s = pow2_round_up(xb.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126) * (1.0 / FP4_MAX))
    x.copy_((e2m1_round((xb / s).clamp(-FP4_MAX, FP4_MAX)) * s).flatten(-2).to(x.dtype))
    return x


def fp4_unpack(b: torch.Tensor) -> torch.Tensor:
    """[N, K/2] float4_e2m1fn_x2 (low nibble first) -> [N, K] float32 e2m1 values."""
    byte = b.view(torch.uint8).long()
    codes = torch.stack([byte & 0xF, byte >> 4], dim=-1).flatten(-2)
    return torch.where(codes >= 8, -E2M1[codes & 7], E2M1[codes & 7])


def _gemm(a, a_s, w, w_s, w_block: int, order: str):
    """a [..., K] FP8 with per-128 scales a_s [..., K/128]; w [N, K] float values with scales w_s [N/w_block or
    ceil(N/128), K/w_block] -> [..., N] in the default dtype."""
    lead, k = a.shape[:-1], a.size(-1)
    a, a_s = a.reshape(-1, k).float(), a_s.reshape(-1, k // 128).float()
    n = w.size(0)
    w_s = w_s.float()
    if w_block == 128:  # FP8: one scale per 128x128 block of the weight
        w_s = w_s.repeat_interleave(128, dim=0)[:n]
    if order == "flat":
        c = (a * a_s.repeat_interleave(128, -1)) @ (w * w_s.repeat_interleave(w_block, -1)).T
    else:
        c = torch.zeros(a.size(0), n)
        for kb in range(k // w_block):
            cols = slice(kb * w_block, (kb + 1) * w_block)
            c += (a[:, cols] @ w[:, cols].T) * a_s[:, kb * w_block // 128, None] * w_s[None, :, kb]
    return c.reshape(*lead, n).to(torch.get_default_dtype())


def sparse_attn(q, kv, attn_sink, topk_idxs, softmax_scale, order="kernel"):
    b, s, h, d = q.shape
    idx = topk_idxs.long()
    keys = kv.float()[torch.arange(b)[:, None, None], idx.clamp_min(0)]  # [b,s,k,d]
    logits = torch.einsum("bshd,bskd->bshk", q.float(), keys) * softmax_scale
    logits = logits.masked_fill((idx < 0)[:, :, None], float("-inf"))
    parts = [slice(None)] if order == "kernel" else [slice(0, idx.size(-1) // 2), slice(idx.size(-1) // 2, None)]
    m = torch.full((b, s, h), float("-inf"))
    total, out = torch.zeros(b, s, h), torch.zeros(b, s, h, d)
    for part in parts:  # an online softmax over the parts
        lg = logits[..., part]
        m_new = torch.maximum(m, lg.amax(-1))
        base = m_new.nan_to_num(neginf=0.0)  # a part with no valid key so far adds nothing
        p = torch.exp(lg - base[..., None])
        rescale = torch.exp(m - base)
        total = total * rescale + p.sum(-1)
        out = out * rescale[..., None] + torch.einsum("bshk,bskd->bshd", p, keys[:, :, part])
        m = m_new
    total = total + torch.exp(attn_sink.float() - m)
    return (out / total[..., None]).to(q.dtype)


def hc_split_sinkhorn(mixes, hc_scale, hc_base, hc_mult=4, sinkhorn_iters=20, eps=1e-6):
    hc = hc_mult
    pre = torch.sigmoid(mixes[..., :hc] * hc_scale[0] + hc_base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[..., hc:2 * hc] * hc_scale[1] + hc_base[hc:2 * hc])
    comb = (mixes[..., 2 * hc:] * hc_scale[2] + hc_base[2 * hc:]).unflatten(-1, (hc, hc))  # [..., row j, col k]
    comb = torch.exp(comb - comb.amax(-1, keepdim=True))
    comb = comb / comb.sum(-1, keepdim=True) + eps
    comb = comb / (comb.sum(-2, keepdim=True) + eps)
    for _ in range(sinkhorn_iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + eps)
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
    return pre, post, comb


def hadamard_transform(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    n = x.size(-1)
    y = x.float()
    h = 1
    while h < n:
        pairs = y.unflatten(-1, (n // (2 * h), 2, h))
        y = torch.stack([pairs[..., 0, :] + pairs[..., 1, :], pairs[..., 0, :] - pairs[..., 1, :]], -2).flatten(-3)
        h *= 2
    return (y * scale).to(x.dtype)


def kernel_module(order: str) -> types.ModuleType:
    """The `kernel` module model.py imports, with GEMMs and attention summed in `order` ("kernel" or "flat")."""
    if order not in ("kernel", "flat"):
        raise ValueError(f"order must be 'kernel' or 'flat'; got {order!r}")
    m = types.ModuleType("kernel")
    m.act_quant, m.fp4_act_quant, m.hc_split_sinkhorn, m.hadamard_transform = (act_quant, fp4_act_quant,
                                                                               hc_split_sinkhorn, hadamard_transform)
    m.fp8_gemm = lambda a, a_s, b, b_s, scale_dtype=None: _gemm(a, a_s, b.float(), b_s, 128, order)
    m.fp4_gemm = lambda a, a_s, b, b_s, scale_dtype=None: _gemm(a, a_s, fp4_unpack(b), b_s, 32, order)
    m.sparse_attn = lambda q, kv, sink, idx, scale: sparse_attn(q, kv, sink, idx, scale, order)
    return m

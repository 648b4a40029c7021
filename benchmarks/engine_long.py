"""Long-context prefill and decode through the engine on a tiny model of the real layer layout, printed, asserting
nothing.

Per context N (`--contexts`, default 4K, 64K, 256K, 1M), in a fresh process so peak RSS is its own: prefill N
tokens through the engine in chunks of `--chunk` with a progress bar (tokens/s, ETA), then `--decode` greedy
decode steps. Prints peak RSS, cache bytes (allocated, and the part the request holds) and decode latency per
token, side by side. A context whose prefill would pass `--max-minutes` stops there and is reported as a
projection: the cost of a chunk grows linearly with its position (the indexer scores every earlier CSA entry,
HCA layers attend to every earlier HCA entry), so a line fitted to the measured chunk times sums to the whole.
Its decode latency is then measured on a synthetic fill (marked `*`): the request's blocks up to N are filled with
random values in the packed formats and the model decodes at positions N.. over them (a decode step's cost
depends on how many entries it scores and gathers, not on their values).

Model: the `tiny` preset (layers window / CSA / HCA / CSA, head_dim 512, window 128, index_topk 64) with a
small vocabulary (`--vocab`), random weights, float32, one thread.

Run: `.venv/bin/python benchmarks/engine_long.py [--contexts 4096,65536] [--max-minutes 10]`.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_


def progress(done: int, total: int, elapsed: float, rate: float):
    eta = (total - done) / rate if rate else float("inf")
    bar = "#" * int(30 * done / total)
    print(f"\r  prefill [{bar:<30}] {done:>9,}/{total:,} tok  {rate:7.0f} tok/s  "
          f"elapsed {elapsed:6.0f} s  ETA {eta:7.0f} s", end="", file=sys.stderr, flush=True)


def projected_seconds(points: list[tuple[int, float]], total: int, chunk: int) -> float:
    """Least-squares line through (chunk start, seconds), summed over all chunks of a `total`-token prefill."""
    x = torch.tensor([p for p, _ in points], dtype=torch.float64)
    y = torch.tensor([t for _, t in points], dtype=torch.float64)
    if len(points) < 2:
        return float(y.mean()) * total / chunk
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    starts = torch.arange(0, total, chunk, dtype=torch.float64)
    return float((y.mean() + slope * (starts - x.mean())).clamp_min(0).sum())


def run_one(n: int, args) -> dict:
    torch.set_num_threads(args.threads)
    config = preset("tiny").replace(vocab_size=args.vocab)
    model = init_random_(Transformer(config, torch.float32), seed=0).eval()
    blocks = -(-(n + args.decode + 1) // 128)
    engine = Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=1, max_num_batched_tokens=args.chunk,
                                              max_model_len=n + args.decode + 1))
    prompt = torch.randint(2, args.vocab, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    rid = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=args.decode + 1, ignore_eos=True))
    output, points, t0 = engine.accumulator(rid), [], time.perf_counter()
    done = 0  # prompt tokens computed: the engine's counter (this is its only request)
    while not output.token_ids:
        start, t = done, time.perf_counter()
        for delta in engine.step():
            output.add(delta)
        points.append((start, time.perf_counter() - t))
        done, elapsed = engine.stats().computed_tokens, time.perf_counter() - t0
        progress(done, n, elapsed, done / elapsed)
        if elapsed > 60 * args.max_minutes and not output.token_ids:
            break
    print(file=sys.stderr)
    prefill = time.perf_counter() - t0
    out = {"n": n, "done": done, "prefill_s": prefill, "complete": bool(output.token_ids),
           "projected_s": projected_seconds(points, n, args.chunk),
           "cache_bytes": engine.runner.cache.nbytes(), "used_bytes": used_bytes(engine, rid)}
    if out["complete"]:
        t = time.perf_counter()
        while not output.finished:
            for delta in engine.step():
                output.add(delta)
        out["decode_ms"] = 1e3 * (time.perf_counter() - t) / args.decode
    else:
        out["decode_ms"], out["used_bytes"] = synthetic_decode(engine, rid, n, args.decode)
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    return out


def synthetic_decode(engine: Engine, rid: int, n: int, steps: int) -> tuple[float, int]:
    """Fills the request's blocks up to n + steps tokens with packed random entries and decodes `steps` tokens
    at positions n.. through the model -> (ms per token, the request's bytes)."""
    cache = engine.memory.cache
    engine.memory.grow(rid, n + steps)
    table = engine.blocks.table(rid)
    g = torch.Generator().manual_seed(2)
    for pools in cache.layers:
        for pool, layout in ((pools.entries, cache.main), (pools.keys, cache.index_key)):
            if pool is not None:  # a few distinct random blocks, repeated
                fill = layout.pack(torch.randn(8, pool.size(1), layout_width(layout), generator=g))
                index = torch.tensor(table)
                pool[index] = fill[torch.arange(len(table)) % 8]
    view, model = engine.runner.view([rid]), engine.model
    ids = torch.randint(2, model.config.vocab_size, (1, steps), generator=g)
    t = time.perf_counter()
    for i in range(steps):
        model(ids[:, i:i + 1], cache=view, start_pos=n + i)
    return 1e3 * (time.perf_counter() - t) / steps, used_bytes(engine, rid)


def layout_width(layout) -> int:
    return getattr(layout, "head_dim", None) or layout.dim


def used_bytes(engine: Engine, rid: int) -> int:
    """The request's blocks plus its slot (window + compressor state)."""
    cache = engine.runner.cache
    return len(engine.blocks.table(rid)) * cache.block_bytes() + cache.slot_bytes()


def report(rows: list[dict], args):
    print(f"\ntiny preset (vocab {args.vocab}), layers window/CSA/HCA/CSA, float32, {args.threads} thread(s), "
          f"prefill chunks of {args.chunk}, {args.decode} decode steps")
    print(f"{'context':>10} {'prefill':>22} {'tok/s':>7} {'decode ms/tok':>14} {'cache alloc':>12} "
          f"{'cache used':>11} {'peak RSS':>9}")
    for r in rows:
        rate = r["done"] / r["prefill_s"]
        if r["complete"]:
            prefill = f"{r['prefill_s']:9.1f} s"
        else:
            prefill = f"proj {duration(r['projected_s'])} ({r['done']:,} done)"
        decode = f"{r['decode_ms']:13.1f}{' ' if r['complete'] else '*'}"
        print(f"{r['n']:>10,} {prefill:>22} {rate:7.0f} {decode} {r['cache_bytes'] / 2**20:8.1f} MiB "
              f"{r['used_bytes'] / 2**20:7.1f} MiB {r['rss_mib']:5.0f} MiB")
    if not all(r["complete"] for r in rows):
        print("proj: prefill stopped after --max-minutes; time projected from a line fitted to the chunk times.\n"
              "*: decode over a synthetic fill of the request's blocks (random values in the packed formats).")


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 3600 else f"{seconds:.0f} s"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="4096,65536,262144,1048576")
    parser.add_argument("--chunk", type=int, default=2048, help="prefill tokens per engine step")
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="per context; then project")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one context, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    rows = []
    for n in (int(x) for x in args.contexts.split(",")):
        print(f"context {n:,}:", file=sys.stderr)
        child = [a for a in sys.argv[1:]] + ["--one", str(n)]
        out = subprocess.run([sys.executable, __file__, *child], stdout=subprocess.PIPE, text=True)
        if out.returncode:
            print(f"context {n:,} failed (exit {out.returncode})", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    report(rows, args)


if __name__ == "__main__":
    main()

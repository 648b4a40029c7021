"""dsv4 against llama.cpp (the CPU peer to beat) on the same tiny DeepSeek-V4 checkpoint, in one sitting.

The peer is set up from this clone alone by `peers/llamacpp.py`: the llama.cpp vendored in the llama-cpp-python
0.3.36 sdist (fetched with pip, sha256-checked), `llama-bench` built with cmake, the tiny checkpoint written by
dsv4's own writer in DeepSeek's inference layout and converted by llama.cpp's converter (all cached in --workdir).
Then llama-bench and dsv4's engine run the same measurements on the same weights: prefill tokens/s at each
context, ms/token for 32 decode steps after it (averages: llama-bench repeats a prefill 3 times at 4K, 2 at 16K, once
from 64K, and a decode 5 times; dsv4 repeats its prefill and decode as often as llama-bench its prefill), peak RSS
and KV bytes. Each measurement runs in its own process, so its peak RSS is its own; dsv4's is also shown in brackets
beyond what the interpreter and torch's import held (its peak right after `import torch`), beside llama.cpp's whole
process. Printed as ratios; asserts nothing.

Run: `.venv/bin/python benchmarks/peer_llamacpp.py [--contexts 4096,16384] [--threads 2] [--decode-threads 1]
[--reuse] [--workdir DIR] [--llama-bench BIN --gguf FILE --checkpoint DIR]`
(the first run fetches the source and builds llama-bench: ~4-10 min on 2 cores, needs cmake and g++; the peer's
benchmarks take ~2 min per 16K context).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from peers.llamacpp import LlamaCpp, default_workdir, repetitions


def run_peer(peer: LlamaCpp, contexts: list[int], threads: int) -> Path:
    """llama-bench's prefill and decode at each context; returns the JSONL file of its rows."""
    out = peer.workdir / "results.jsonl"
    rows = []
    for context in contexts:
        for row in (peer.prefill(context, threads), peer.decode(context, threads)):
            print(f"llama.cpp {row['what']} at {context}: {row['tokens_per_s']:.1f} tok/s, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            rows.append(row)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def measure_dsv4(checkpoint: Path, context: int, steps: int, threads: int, decode_threads: int,
                 compile: bool = False) -> dict:
    """Prefill `context` random tokens, then `steps` greedy decode steps (in this process). compile: decode steps
    as one compiled graph (EngineConfig.compile); a first, untimed request of the same length compiles every
    bucket the timed one uses (its time is reported as compile_s)."""
    import torch

    torch_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter and torch's import
    from dsv4.engine import Engine, EngineConfig, SamplingParams

    torch.set_num_threads(threads)
    blocks = -(-(context + steps + 1) // 128)
    engine = Engine.from_pretrained(checkpoint, EngineConfig(num_blocks=blocks, max_num_seqs=1,
                                                             max_num_batched_tokens=2048,
                                                             decode_threads=decode_threads, compile=compile))
    prompt = torch.randint(2, 1000, (context,), generator=torch.Generator().manual_seed(0)).tolist()
    params = SamplingParams(temperature=0, max_tokens=steps + 1, ignore_eos=True)
    compile_s = None
    if compile:
        t = time.perf_counter()
        engine.generate([prompt], params)
        compile_s = time.perf_counter() - t
    prefills, decodes = [], []
    for _ in range(repetitions(context)):  # as many as llama-bench runs, averaged as it averages them
        output = engine.accumulator(engine.add_request(prompt, params))
        t = time.perf_counter()
        while not output.token_ids:  # the prefill's chunks; the last one samples the first token
            for delta in engine.step():
                output.add(delta)
        prefills.append(time.perf_counter() - t)
        t = time.perf_counter()
        while not output.finished:
            for delta in engine.step():
                output.add(delta)
        decodes.append((time.perf_counter() - t) / steps)
    prefill, decode = sum(prefills) / len(prefills), sum(decodes) / len(decodes)
    return {"ctx": context, "prefill_tokens_per_s": context / prefill, "ms_per_token": decode * 1e3,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch_rss_mb": torch_rss_mb,
            "kv_bytes": engine.runner.cache.nbytes(), "compile_s": compile_s}


def dsv4_in_subprocess(checkpoint: Path, context: int, threads: int, decode_threads: int,
                       compile: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure-dsv4", str(checkpoint), str(context), "--threads", str(threads),
           "--decode-threads", str(decode_threads)] + (["--compile"] if compile else [])
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # as the dsv4 command runs (see dsv4.cli.main)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def peer_rows(path: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["what"], r["ctx"]): r for r in rows if r.get("what") in ("prefill", "decode")}


def report(peer: dict, ours: list[dict]) -> None:
    print(f"{'ctx':>7} | {'prefill tok/s  dsv4 / llama.cpp':>34} | {'decode ms/token  dsv4 / llama.cpp':>36} |"
          f" {'peak RSS MB  dsv4 (beyond torch) / llama.cpp':>46} | {'KV MB  dsv4 / llama.cpp':>25}")
    for r in ours:
        pp, tg = peer.get(("prefill", r["ctx"]), {}), peer.get(("decode", r["ctx"]), {})
        pp_rate, tg_ms = pp.get("tokens_per_s", float("nan")), tg.get("ms_per_token", float("nan"))
        kv = tg.get("kv_bytes", float("nan"))
        rate = r["prefill_tokens_per_s"]
        print(f"{r['ctx']:>7} | {rate:9.0f} / {pp_rate:7.0f} = {rate / pp_rate:5.2f}x"
              f"      | {r['ms_per_token']:8.2f} / {tg_ms:6.2f} = {tg_ms / r['ms_per_token']:5.2f}x speed"
              f" | {r['peak_rss_mb']:7.0f} ({r['peak_rss_mb'] - r.get('torch_rss_mb', float('nan')):4.0f})"
              f" / {tg.get('peak_rss_mb', float('nan')):5.0f}"
              f" = {r['peak_rss_mb'] / tg.get('peak_rss_mb', float('nan')):5.2f}x"
              f"   | {r['kv_bytes'] / 1e6:6.1f} / {kv / 1e6:5.1f} = {r['kv_bytes'] / kv:4.2f}x")


def parse_contexts(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        contexts = [int(c) for c in text.split(",")]
    except ValueError:
        parser.error(f"--contexts must be comma-separated token counts, e.g. 4096,16384; got {text!r}")
    if any(c <= 0 for c in contexts):
        parser.error(f"--contexts must be positive token counts; got {text!r}")
    return contexts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="4096,16384")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-threads", type=int, default=1,
                        help="dsv4's threads for decode-only steps (EngineConfig.decode_threads; the tiny model's "
                             "decode ops are too small to split); prefill uses --threads")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--reuse", action="store_true", help="reuse the peer results of the last run")
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="the peer's source, build, checkpoint, GGUF and results (default: %(default)s)")
    parser.add_argument("--llama-bench", type=Path, help="an existing llama-bench (DeepSeek-V4 support) instead of "
                        "building one")
    parser.add_argument("--gguf", type=Path, help="an existing GGUF instead of converting the tiny checkpoint "
                        "(give --checkpoint too: the checkpoint it was converted from, which dsv4 runs)")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint dsv4 runs (default: the tiny one in "
                        "--workdir, written if missing)")
    parser.add_argument("--compile", action="store_true", help="dsv4's decode steps as one compiled graph "
                        "(EngineConfig.compile; compile time printed, not in the timings)")
    parser.add_argument("--measure-dsv4", nargs=2, metavar=("CHECKPOINT", "CTX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_dsv4:
        print(json.dumps(measure_dsv4(Path(args.measure_dsv4[0]), int(args.measure_dsv4[1]), args.steps,
                                      args.threads, args.decode_threads, args.compile)))
        return
    contexts = parse_contexts(parser, args.contexts)
    if args.gguf and not args.checkpoint:
        parser.error("--gguf needs --checkpoint: the checkpoint the GGUF was converted from (dsv4 runs it)")
    peer = LlamaCpp(args.workdir, llama_bench=args.llama_bench, gguf=args.gguf, checkpoint=args.checkpoint)
    results = peer.workdir / "results.jsonl"
    if not (args.reuse and results.is_file()):
        peer.setup(log=lambda msg: print(f"[peer] {msg}", file=sys.stderr, flush=True))
        results = run_peer(peer, contexts, args.threads)
    ours = [dsv4_in_subprocess(peer.checkpoint, c, args.threads, args.decode_threads, args.compile)
            for c in contexts]
    print(f"same checkpoint ({peer.checkpoint}; llama.cpp: {peer.gguf}), {args.threads} threads (dsv4 decode steps: "
          f"{args.decode_threads}), {args.steps} decode steps")
    report(peer_rows(results), ours)
    if args.compile:
        times = ", ".join(f"{r['ctx']}: {r['compile_s']:.0f} s" for r in ours)
        print(f"dsv4 compile (a first request of each length, untimed): {times}")


if __name__ == "__main__":
    main()

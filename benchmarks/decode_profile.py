"""Where a decode step's time goes, eager vs compiled (`EngineConfig(compile=True)`), and what compiling costs.

One engine of each kind on the same model prefills the same prompt (`--context` tokens), then decodes. Printed:
- the compiled engine's first decode step (dynamo trace + inductor compile, or an inductor cache hit: run it
  twice with the same TORCHINDUCTOR_CACHE_DIR for a warm start, with an empty one for a cold start) and the
  cache directory;
- ms per decode step of each path over `--steps` steps and the ratio compiled / eager;
- the torch profiler's top ops (self CPU time) of `--profile-steps` decode steps on each path; with `--kernels`, the
  compiled graph's own C++ kernels are listed too (inductor's kernel profiling: it changes the generated code, so
  read the table, not that run's ms/step).

Run on a quiet machine: `.venv/bin/python benchmarks/decode_profile.py [--model tiny|CHECKPOINT] [--context 4096]
[--threads 2]`. Timings on a shared, loaded machine are noisy; the ratio is what to read.
"""

import argparse
import time
from pathlib import Path

import torch
import torch._inductor.config
from torch.profiler import ProfilerActivity, profile

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.engine.decode_graph import inductor_cache_dir
from dsv4.model import PRESETS, Transformer, load_model, preset
from dsv4.model.init import init_random_


def build_model(name: str) -> Transformer:
    if name in PRESETS:
        return init_random_(Transformer(preset(name), torch.float32), seed=0).eval()
    return load_model(Path(name), dtype=torch.float32)


def prefilled(model: Transformer, context: int, steps: int, compile: bool) -> tuple[Engine, int]:
    """An engine holding one request whose prompt of `context` tokens is prefilled -> (engine, request id)."""
    blocks = -(-(context + steps + 8) // 128) + 1
    engine = Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=1, max_num_batched_tokens=context,
                                              compile=compile))
    prompt = [3 + (i * 7919) % (model.config.vocab_size - 3) for i in range(context)]
    rid = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 1, ignore_eos=True))
    engine.step()  # the prefill (eager on both paths) and the first token
    return engine, rid


def timed_steps(engine: Engine, n: int) -> float:
    """ms per decode step over n steps."""
    t = time.perf_counter()
    for _ in range(n):
        engine.step()
    return (time.perf_counter() - t) * 1e3 / n


def top_ops(engine: Engine, n: int, rows: int, name_width: int = 55) -> str:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            engine.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=name_width)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="a preset (random weights) or a checkpoint directory")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--steps", type=int, default=64, help="decode steps timed on each path")
    p.add_argument("--profile-steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15, help="ops listed per profile")
    p.add_argument("--kernels", action="store_true", help="profile the compiled graph's kernels one by one")
    args = p.parse_args()
    if args.kernels:
        torch._inductor.config.cpp.enable_kernel_profile = True
    torch.set_num_threads(args.threads)
    model = build_model(args.model)
    total = args.steps + args.profile_steps + 2
    print(f"model {args.model} | context {args.context} | {args.threads} threads | torch {torch.__version__}")

    compiled, _ = prefilled(model, args.context, total, compile=True)
    t = time.perf_counter()
    compiled.step()
    first = time.perf_counter() - t
    print(f"compiled: first decode step {first:.1f} s (trace + compile, or a cache hit) | inductor cache "
          f"{inductor_cache_dir()}")
    eager, _ = prefilled(model, args.context, total, compile=False)
    eager.step()

    ms = {"eager": timed_steps(eager, args.steps), "compiled": timed_steps(compiled, args.steps)}
    print(f"decode ms/step: eager {ms['eager']:.2f} | compiled {ms['compiled']:.2f} | "
          f"compiled / eager {ms['compiled'] / ms['eager']:.2f}x")
    for name, engine in (("eager", eager), ("compiled", compiled)):
        print(f"\n--- top ops, {name}, {args.profile_steps} decode steps ---")
        print(top_ops(engine, args.profile_steps, args.rows, 160 if args.kernels else 55))


if __name__ == "__main__":
    main()

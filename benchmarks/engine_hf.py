"""The engine against HF transformers' `deepseek_v4` on the same tiny config and weights, same process: decode
tokens/s after a prefill of N tokens and the KV cache bytes each holds for the request, printed as ratios.

HF runs eager attention over its DynamicCache (float32, dense); dsv4 runs the
paged packed cache (584 B entries, MXFP4 indexer keys). Prints; asserts nothing.
Run: `.venv/bin/python benchmarks/engine_hf.py [--contexts 4096,16384] [--steps 16]`.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.model.hf_oracle import hf_model  # noqa: E402  (the oracle's weight mapping)


def tensor_bytes(obj, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the distinct tensors reachable from obj (lists, dicts, object attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v, seen, depth + 1) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen, depth + 1) for v in vars(obj).values())
    return 0


def ours(model, prompt: list[int], steps: int) -> tuple[float, int]:
    engine = Engine(model, None, EngineConfig(num_blocks=-(-(len(prompt) + steps) // 128), max_num_seqs=1,
                                              max_num_batched_tokens=2048))
    request = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 1, ignore_eos=True))
    while not engine.seqs[request].output_ids:
        engine.step()
    held = len(engine.blocks.table(request)) * engine.runner.cache.block_bytes() + engine.runner.cache.slot_bytes()
    t = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    return steps / (time.perf_counter() - t), held


@torch.inference_mode()
def theirs(hf, prompt: list[int], steps: int) -> tuple[float, int]:
    cache = DynamicCache(config=hf.config)
    ids = torch.tensor([prompt])
    for i in range(0, len(prompt), 2048):  # chunked prefill, as ours
        logits = hf(ids[:, i:i + 2048], cache=cache, use_cache=True).logits[:, -1]
    held = tensor_bytes(cache)
    t = time.perf_counter()
    for _ in range(steps):
        token = logits.argmax(-1, keepdim=True)
        logits = hf(token, cache=cache, use_cache=True).logits[:, -1]
    return steps / (time.perf_counter() - t), held


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="4096")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine
    model = init_random_(Transformer(preset("tiny"), torch.float32), seed=0).eval()
    hf = hf_model(model)
    print(f"tiny preset, float32, {args.steps} greedy decode steps after a prefill of N tokens")
    print(f"  {'N':>8}  {'dsv4 tok/s':>10}  {'HF tok/s':>9}  {'speed':>6}  {'dsv4 KV':>10}  {'HF KV':>10}  "
          f"{'memory':>7}")
    for n in (int(x) for x in args.contexts.split(",")):
        prompt = torch.randint(2, 1000, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        a_speed, a_bytes = ours(model, prompt, args.steps)
        b_speed, b_bytes = theirs(hf, prompt, args.steps)
        print(f"  {n:>8,}  {a_speed:>10.2f}  {b_speed:>9.2f}  {a_speed / b_speed:>5.2f}x  "
              f"{a_bytes / 2**20:>7.2f} MiB  {b_bytes / 2**20:>6.2f} MiB  {a_bytes / b_bytes:>6.3f}")


if __name__ == "__main__":
    main()

"""The engine against HF transformers' `deepseek_v4` on the same tiny config and weights, same process: decode
tokens/s after a prefill of N tokens and the KV cache bytes each holds for the request, printed as ratios.

HF runs eager attention over its DynamicCache (float32, dense); dsv4 runs the
paged packed cache (584 B entries, MXFP4 indexer keys). Also printed: the tensor ops each dispatches per decode
step (on this tiny model both are bound by op dispatch, not arithmetic), and the bound the entry formats alone set
on the memory ratio (packed bytes per token over float32 bytes per token), and the bound the lm head sets on the
speed ratio: both engines end each step with the same float32 [vocab, dim] matrix-vector product (129,280 x 128
here, 66 MB read per token: memory-bound), so dsv4 cannot be faster than HF's step time over that product's.
Prints; asserts nothing.
Run: `.venv/bin/python benchmarks/engine_hf.py [--contexts 4096,16384] [--steps 16]`.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import DynamicCache

from dsv4.cache.plan import KVPlan
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


class OpCounter(TorchDispatchMode):
    """Counts the tensor ops dispatched while active."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def ours(model, prompt: list[int], steps: int) -> tuple[float, int, int]:
    engine = Engine(model, None, EngineConfig(num_blocks=-(-(len(prompt) + steps + 1) // 128), max_num_seqs=1,
                                              max_num_batched_tokens=2048))
    request = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 2, ignore_eos=True))
    output = engine.accumulator(request)
    while not output.token_ids:  # the prefill's chunks; the last one samples the first token
        for delta in engine.step():
            output.add(delta)
    held = len(engine.blocks.table(request)) * engine.runner.cache.block_bytes() + engine.runner.cache.slot_bytes()
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    speed = steps / (time.perf_counter() - t)
    with OpCounter() as counter:  # one more step, untimed
        engine.step()
    return speed, held, counter.ops


@torch.inference_mode()
def theirs(hf, prompt: list[int], steps: int) -> tuple[float, int, int]:
    cache = DynamicCache(config=hf.config)
    ids = torch.tensor([prompt])
    for i in range(0, len(prompt), 2048):  # chunked prefill, as ours
        logits = hf(ids[:, i:i + 2048], cache=cache, use_cache=True).logits[:, -1]
    held = tensor_bytes(cache)
    t = time.perf_counter()
    for _ in range(steps):
        token = logits.argmax(-1, keepdim=True)
        logits = hf(token, cache=cache, use_cache=True).logits[:, -1]
    speed = steps / (time.perf_counter() - t)
    with OpCounter() as counter:
        hf(logits.argmax(-1, keepdim=True), cache=cache, use_cache=True)
    return speed, held, counter.ops


def head_ms(hf, reps: int = 20) -> float:
    """Milliseconds of HF's lm head on one token (the product both engines run every step)."""
    x = torch.randn(1, 1, hf.config.hidden_size)
    with torch.inference_mode():
        hf.lm_head(x)
        t = time.perf_counter()
        for _ in range(reps):
            hf.lm_head(x)
    return (time.perf_counter() - t) / reps * 1e3


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
          f"{'memory':>7}  {'ops/step dsv4':>13}  {'HF':>6}  {'head ms':>7}  {'speed bound':>11}")
    for n in (int(x) for x in args.contexts.split(",")):
        prompt = torch.randint(2, 1000, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        a_speed, a_bytes, a_ops = ours(model, prompt, args.steps)
        b_speed, b_bytes, b_ops = theirs(hf, prompt, args.steps)
        head = head_ms(hf)
        print(f"  {n:>8,}  {a_speed:>10.2f}  {b_speed:>9.2f}  {a_speed / b_speed:>5.2f}x  "
              f"{a_bytes / 2**20:>7.2f} MiB  {b_bytes / 2**20:>6.2f} MiB  {a_bytes / b_bytes:>6.3f}  "
              f"{a_ops:>13,}  {b_ops:>6,}  {head:>7.2f}  {1e3 / b_speed / head:>10.2f}x", flush=True)
    c, plan = model.config, KVPlan(model.config)
    fp32 = sum({"csa": 4 * (c.head_dim + c.index_head_dim) / 4, "hca": 4 * c.head_dim / 128}.get(k, 0)
               for k in plan.kinds)
    print(f"  format bound on the memory ratio as N grows: {plan.bytes_per_token():.0f} / {fp32:.0f} B per token "
          f"= {plan.bytes_per_token() / fp32:.3f} (packed entries vs float32 ones; the fixed part comes on top)")
    print("  speed bound: HF's step time over the lm head's (the float32 GEMV over the vocabulary both run each "
          "step): the most any engine computing the same logits could gain over HF")


if __name__ == "__main__":
    main()

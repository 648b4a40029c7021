"""The cost of the FP8 activation rounding (`simulate_act_quant`, on by default for FP8/FP4 checkpoints) on engine
decode: two engines on the same weights, rounding on and off, step in alternation (so the load of a shared machine
hits both alike); printed are the median ms per decode step of each, their ratio, and the aten ops one step
dispatches (load-independent). Asserts nothing.

Run: `.venv/bin/python benchmarks/act_quant.py [--context 512] [--steps 32]`.
"""

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_

WIDER = preset("tiny").replace(dim=1024, moe_inter_dim=512, q_lora_rank=512, o_lora_rank=512, n_heads=8,
                               o_groups=4, vocab_size=32768)


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def prefilled(config, rounding: bool, context: int, steps: int, batch: int) -> Engine:
    model = init_random_(Transformer(config.replace(simulate_act_quant=rounding), torch.float32), seed=0).eval()
    blocks = batch * -(-(context + steps + 2) // 128)
    engine = Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=batch, max_num_batched_tokens=4096))
    g = torch.Generator().manual_seed(1)
    for _ in range(batch):
        prompt = torch.randint(2, config.vocab_size, (context,), generator=g).tolist()
        engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 2, ignore_eos=True))
    engine.step()  # the prefills (and each request's first token)
    return engine


def compare(config, context: int, steps: int, batch: int) -> tuple[float, float, int, int]:
    """-> median ms per decode step off and on, aten ops per step off and on."""
    engines = {r: prefilled(config, r, context, steps, batch) for r in (False, True)}
    ops = {}
    for r, engine in engines.items():
        with OpCount() as count:
            engine.step()
        ops[r] = count.n
    times = {False: [], True: []}
    for _ in range(steps):
        for r, engine in engines.items():
            t = time.perf_counter()
            engine.step()
            times[r].append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[False]), 1e3 * statistics.median(times[True]), ops[False], ops[True]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: intra-op threads under contention are far slower
    print(f"engine decode after {args.context} prompt tokens, float32, median of {args.steps} alternating steps")
    for name, config in (("tiny (dim 128)", preset("tiny")), ("wider (dim 1024)", WIDER)):
        for batch in (1, 8):
            off, on, ops_off, ops_on = compare(config, args.context, args.steps, batch)
            print(f"  {name:17s} batch {batch}: off {off:7.2f} ms  on {on:7.2f} ms  ({on / off:.2f}x);  "
                  f"aten ops per step {ops_off} -> {ops_on} ({ops_on / ops_off:.2f}x)")


if __name__ == "__main__":
    main()

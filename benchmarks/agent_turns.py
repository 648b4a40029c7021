"""An agent's conversation turn after turn, against the same engine without prefix reuse, same sitting: each turn
sends the whole conversation so far (the previous prompt, the model's reply, a tool result) and waits for the first
token. With the prefix cache, a turn starts from the last block boundary the previous turn reached, reply included,
so its time to first token stays flat as the conversation grows; without it, every turn prefills everything.
Prints time to first token per turn and the ratio; asserts nothing.

Run: `.venv/bin/python benchmarks/agent_turns.py [--context 16384] [--turns 5]`.
"""

import argparse
import time

import torch

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_


def turns(model, context: int, n_turns: int, reply: int, tool: int, prefix_cache: bool) -> list[float]:
    blocks = -(-(context + n_turns * (reply + tool) + reply) // 128) + 1
    engine = Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=1, max_num_batched_tokens=2048,
                                              prefix_cache_size=8 if prefix_cache else 0))
    g = torch.Generator().manual_seed(0)
    conversation = torch.randint(2, 1000, (context,), generator=g).tolist()
    ttft = []
    for _ in range(n_turns):
        request = engine.add_request(conversation, SamplingParams(temperature=0, max_tokens=reply, ignore_eos=True))
        out, t = engine.accumulator(request), time.perf_counter()
        while not out.token_ids:
            for delta in engine.step():
                out.add(delta)
        ttft.append(time.perf_counter() - t)
        while not out.finished:
            for delta in engine.step():
                out.add(delta)
        conversation = conversation + out.token_ids + torch.randint(2, 1000, (tool,), generator=g).tolist()
    return ttft


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=16384, help="tokens before the first turn")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--reply", type=int, default=64, help="tokens the model writes per turn")
    parser.add_argument("--tool", type=int, default=100, help="tokens of tool result added per turn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = init_random_(Transformer(preset("tiny"), torch.float32), seed=0).eval()
    turns(model, 2048, 1, 4, 4, True)  # warm-up: the first prefill in a process pays one-time costs
    cached = turns(model, args.context, args.turns, args.reply, args.tool, True)
    plain = turns(model, args.context, args.turns, args.reply, args.tool, False)
    print(f"tiny preset, float32, 1 thread: a {args.context:,}-token conversation, then each turn adds a "
          f"{args.reply}-token reply and a {args.tool}-token tool result")
    print(f"  {'turn':>4}  {'prefix cache':>12}  {'none':>8}  {'speed':>6}")
    for i, (a, b) in enumerate(zip(cached, plain, strict=True)):
        print(f"  {i:>4}  {a * 1e3:>9.0f} ms  {b * 1e3:>5.0f} ms  {b / a:>5.1f}x")


if __name__ == "__main__":
    main()

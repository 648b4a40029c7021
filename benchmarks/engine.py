"""Engine throughput and decode latency on the tiny preset (random weights), printed, asserting nothing.

1. Batching gain: 16 concurrent requests vs 1, greedy, same prompt length and mixed lengths (decodes at
   different positions run as one batch, each row at its own position).
2. MTP speculative decoding: tokens/s and acceptance rate.
3. Decode latency per token after a prefill of 4K / 16K tokens (more with --contexts), cache bytes, peak RSS.

Run: `.venv/bin/python benchmarks/engine.py [--contexts 4096,16384,65536]`.
"""

import argparse
import resource
import time

import torch

from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_


def engine_for(model, max_len: int, max_num_seqs: int = 16) -> Engine:
    blocks = max_num_seqs * (-(-max_len // 128))
    return Engine(model, None, EngineConfig(num_blocks=blocks, max_num_seqs=max_num_seqs,
                                            max_num_batched_tokens=2048))


def throughput(model, lengths: list[int], new_tokens: int) -> float:
    engine = engine_for(model, max(lengths) + new_tokens)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, 1000, (n,), generator=g).tolist() for n in lengths]
    t = time.perf_counter()
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True))
    return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t)


def decode_latency(model, context: int, steps: int = 16) -> tuple[float, float, int]:
    engine = engine_for(model, context + steps + 1, max_num_seqs=1)
    prompt = torch.randint(2, 1000, (context,), generator=torch.Generator().manual_seed(1)).tolist()
    output = engine.accumulator(engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=steps + 1,
                                                                          ignore_eos=True)))
    t = time.perf_counter()
    while not output.token_ids:  # the prefill's chunks; the last one samples the first token
        for delta in engine.step():
            output.add(delta)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    while not output.finished:
        for delta in engine.step():
            output.add(delta)
    return prefill, (time.perf_counter() - t) / steps, engine.runner.cache.nbytes()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="4096,16384")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: intra-op threads under contention are far slower
    model = init_random_(Transformer(preset("tiny"), torch.float32), seed=0).eval()

    one = throughput(model, [128], args.new_tokens)
    same = throughput(model, [128] * 16, args.new_tokens)
    mixed = throughput(model, [100 + 7 * i for i in range(16)], args.new_tokens)
    print(f"tiny preset, {args.new_tokens} new tokens per request, greedy")
    print(f"  1 request:                       {one:8.1f} tok/s")
    print(f"  16 requests, same length:        {same:8.1f} tok/s  ({same / one:.2f}x)")
    print(f"  16 requests, mixed lengths:      {mixed:8.1f} tok/s  ({mixed / one:.2f}x)")
    spec = Engine(model, None, EngineConfig(num_blocks=4, max_num_seqs=1, speculative=True))
    t = time.perf_counter()
    spec.generate([list(range(2, 130))], SamplingParams(temperature=0, max_tokens=args.new_tokens))
    print(f"  MTP speculative, 1 request:      {args.new_tokens / (time.perf_counter() - t):8.1f} tok/s, "
          f"acceptance {100 * spec.speculator.acceptance_rate:.0f}% of {spec.speculator.drafted} drafts "
          "(random weights: the MTP layer has not learned to predict)")
    print("decode latency after a prefill of N tokens (one request):")
    for n in (int(x) for x in args.contexts.split(",")):
        prefill, per_token, nbytes = decode_latency(model, n)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"  N={n:>8,}: prefill {prefill:7.1f} s, decode {1e3 * per_token:7.1f} ms/token, "
              f"cache {nbytes / 2**20:7.1f} MiB allocated, peak RSS {rss:7.0f} MiB")


if __name__ == "__main__":
    main()

"""MTP speculative decoding on a trained checkpoint (the built-in model): the MTP layer's draft acceptance rate and
the decode speed-up over plain greedy decoding of the same prompts, in the same run, printed, asserting nothing
(besides that both decodings produce the same tokens, as greedy speculation must).

Prompts: held-out agent tasks as `dsv4 agent` sends them (system prompt, tool schemas, the task) and passkey
prompts; one request at a time (drafts are verified while a single greedy request decodes).

Run: `.venv/bin/python benchmarks/mtp_trained.py CHECKPOINT [--prompts 6] [--max-tokens 64]`.
"""

import argparse
import time

import torch

from dsv4.agent.loop import SYSTEM_PROMPT
from dsv4.agent.sandbox_tools import sandbox_tools
from dsv4.agent.tools import ToolRegistry
from dsv4.encoding import encode_request
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.train.evals import held_out_tasks, passkey_cases


def prompts(engine: Engine, n: int) -> list[str]:
    tools = ToolRegistry(sandbox_tools(None)).schemas()  # the schemas only: no tool runs here
    agent = [encode_request({"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                          {"role": "user", "content": t.prompt}], "tools": tools})
             for t in held_out_tasks(n)]
    count = lambda text: len(engine.tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    return agent + [c.prompt for c in passkey_cases(count, [1024], [0.5], max(1, n // 3))]


def timed(engine: Engine, texts: list[str], max_tokens: int) -> tuple[list[list[int]], float]:
    t = time.perf_counter()
    outs = engine.generate(texts, SamplingParams(temperature=0, max_tokens=max_tokens))
    return [o.token_ids for o in outs], time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one decode thread is the fast setting for a small model
    results = {}
    for speculative in (False, True):
        engine = Engine.from_pretrained(args.checkpoint, EngineConfig(speculative=speculative, max_num_seqs=1))
        texts = prompts(engine, args.prompts)
        timed(engine, texts[:1], 4)  # warm-up
        _, prefill = timed(engine, texts, 1)  # the prompts' prefill (and first token), subtracted below
        before = engine.stats()
        ids, total = timed(engine, texts, args.max_tokens)
        stats = engine.stats()
        drafted, accepted = stats.drafted_tokens - before.drafted_tokens, stats.accepted_tokens - before.accepted_tokens
        decoded = sum(len(x) - 1 for x in ids)
        speed = decoded / max(total - prefill, 1e-9)
        results[speculative] = (ids, speed)
        print(f"{'MTP speculative' if speculative else 'plain greedy   '}: {decoded} decoded tokens from {len(texts)} "
              f"prompts, {speed:.1f} tok/s (prefill subtracted)"
              + (f"; drafts accepted {accepted}/{drafted} = {100 * accepted / max(drafted, 1):.1f}%"
                 if speculative else ""), flush=True)
    print(f"same tokens: {results[False][0] == results[True][0]}; "
          f"decode speed-up with MTP: {results[True][1] / results[False][1]:.2f}x")


if __name__ == "__main__":
    main()

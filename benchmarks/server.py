"""The HTTP server's cost over the in-process engine, same sitting, same weights and prompts: 16 concurrent
streaming chat completions through `dsv4 serve` (its own process, as deployed: SSE, the DSML stream parser, JSON
per token) against the same 16 rendered prompts through `Engine.generate` in this process; and one request's time
to first token over HTTP. Both on one intra-op thread. Prints tokens/s and the ratio; asserts nothing.

Run: `.venv/bin/python benchmarks/server.py [--requests 16] [--tokens 64]`.
"""

import argparse
import asyncio
import json
import time
from contextlib import contextmanager

import httpx
import torch

from dsv4.encoding import encode_request
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.server.background import serve_process


def chat(i: int, tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Request {i}: tell me about caches, part {i}."}],
            "thinking": {"type": "disabled"}, "temperature": 0, "max_tokens": tokens}


def engine(n: int) -> Engine:
    config = EngineConfig(num_blocks=8 * n, max_num_seqs=n, max_num_batched_tokens=2048, prefix_cache_size=0)
    return Engine.from_pretrained("tiny", config)


def in_process(n: int, tokens: int) -> tuple[float, int]:
    e = engine(n)
    prompts = [encode_request(chat(i, tokens)) for i in range(n)]
    t = time.perf_counter()
    outs = e.generate(prompts, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
    return time.perf_counter() - t, sum(len(o.token_ids) for o in outs)


async def stream(http: httpx.AsyncClient, body: dict) -> tuple[int, float]:
    """-> (completion tokens, seconds to the first content chunk)."""
    t, first, usage = time.perf_counter(), None, 0
    async with http.stream("POST", "/v1/chat/completions",
                           json={**body, "stream": True, "stream_options": {"include_usage": True},
                                 "ignore_eos": True}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t
    return usage, first if first is not None else float("nan")


@contextmanager
def dsv4_serve(n: int, engine_in_process: bool):
    """`dsv4 serve` on the tiny preset in a child process, configured as `engine(n)`."""
    args = ["--model", "tiny", "--max-num-seqs", str(n), "--max-num-batched-tokens", "2048",
            "--prefix-cache-size", "0", "--kv-cache-gib", "1"] + (["--engine-in-process"] if engine_in_process else [])
    with serve_process(args, env={"OMP_NUM_THREADS": "1"}) as (url, _):
        yield url


def over_http(n: int, tokens: int, engine_in_process: bool) -> tuple[float, int, float]:
    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            _, ttft = await stream(http, chat(999, 4))  # warm, and one request's time to first token
            t = time.perf_counter()
            results = await asyncio.gather(*(stream(http, chat(i, tokens)) for i in range(n)))
            return time.perf_counter() - t, sum(u for u, _ in results), ttft

    with dsv4_serve(n, engine_in_process) as url:
        return asyncio.run(main(url))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    direct_s, direct_tokens = in_process(args.requests, args.tokens)
    a = direct_tokens / direct_s
    print(f"tiny preset, {args.requests} concurrent greedy chats x {args.tokens} tokens, float32, 1 thread")
    print(f"  Engine.generate in this process   : {a:8.1f} tok/s  ({direct_tokens} tokens in {direct_s:.2f} s)")
    for label, engine_in_process in (("dsv4 serve (engine process)", False),
                                     ("dsv4 serve --engine-in-process", True)):
        http_s, http_tokens, ttft = over_http(args.requests, args.tokens, engine_in_process)
        b = http_tokens / http_s
        print(f"  {label:<34}: {b:8.1f} tok/s  ({http_tokens} tokens in {http_s:.2f} s) = {b / a:.2f}x; "
              f"one request's first token {ttft * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()

"""What `dsv4 serve --upstream` adds over its upstream alone, same sitting: one greedy streamed request at a time,
(a) straight to the upstream's `/v1/completions` with the rendered prompt, and (b) as a chat completion through a
front `dsv4 serve --upstream` (its own process: rendering, tokenizing, the proxy hop, the DSML stream parser, SSE
per token). The upstream is `dsv4 serve` on the tiny preset. The two paths alternate, and each is measured as
time to first token and time per token after it (medians over the rounds); printed with the ratio (b) / (a) and
the milliseconds added. Asserts nothing.

Run: `.venv/bin/python benchmarks/upstream.py [--rounds 8] [--tokens 64]`.
"""

import argparse
import json
import statistics
import time

import httpx

from dsv4.encoding import encode_request
from dsv4.server.background import serve_process


def chat(tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": "Tell me about caches."}], "thinking": {"type": "disabled"},
            "temperature": 0, "max_tokens": tokens, "ignore_eos": True}


def timed(http: httpx.Client, path: str, body: dict) -> tuple[float, float, int]:
    """(seconds to the first text, seconds per text event after it, text events) of one streamed request."""
    start, times = time.perf_counter(), []
    with http.stream("POST", path, json={**body, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: "):]).get("choices") or []:
                delta = choice.get("delta", choice)
                if delta.get("text") or delta.get("content") or delta.get("reasoning_content"):
                    times.append(time.perf_counter())
    first = times[0] - start
    per = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")
    return first, per, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    body = chat(args.tokens)
    raw = {"prompt": encode_request(body), "max_tokens": args.tokens, "temperature": 0, "ignore_eos": True,
           "skip_special_tokens": False}
    with serve_process(["--model", "tiny", "--served-model-name", "tiny"]) as (up, _), \
            serve_process(["--upstream", up]) as (front, _), \
            httpx.Client(base_url=up, timeout=300) as direct, httpx.Client(base_url=front, timeout=300) as proxied:
        timed(direct, "/v1/completions", raw)  # warm both paths
        timed(proxied, "/v1/chat/completions", body)
        alone, through = [], []
        for _ in range(args.rounds):
            alone.append(timed(direct, "/v1/completions", raw))
            through.append(timed(proxied, "/v1/chat/completions", body))
    for name, i, unit in (("first token", 0, 1e3), ("per token", 1, 1e3)):
        a, b = statistics.median(r[i] for r in alone), statistics.median(r[i] for r in through)
        print(f"{name:>12}: upstream alone {a * unit:8.2f} ms, through --upstream {b * unit:8.2f} ms "
              f"(x{b / a:.3f}, +{(b - a) * unit:.2f} ms)")
    print(f"text events a request: {alone[0][2]} alone, {through[0][2]} through (rounds: {args.rounds})")


if __name__ == "__main__":
    main()

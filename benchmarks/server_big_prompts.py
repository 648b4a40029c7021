"""A stream's inter-token gaps while 5 MB prompts arrive (#12): `dsv4 serve` (tiny random-weight model, engine in
its own process, defaults otherwise) streams one long chat completion (`ignore_eos`) and the wall time between its
successive content / reasoning deltas is recorded, (a) alone and (b) while N other clients each send a chat
request whose prompt is ~5 MB of text (refused as too long for the context, or tokenized: either way the stream
must not stall). Prints the worst and p99 gap of each and their ratio (b / a), the big requests' status codes and
latencies, and the server's peak RSS. The big requests come from processes of their own, bodies encoded before
the clock starts, so this client's own event of sending 5 MB does not show up as a gap.

Prints numbers; asserts nothing. Run: `.venv/bin/python benchmarks/server_big_prompts.py [--prompt-mb 5]
[--big-requests 6] [--tokens 300] [--serve-args "--max-model-len 1000000"]`.
"""

import argparse
import itertools
import json
import multiprocessing as mp
import shlex
import statistics
import time

import httpx

from dsv4.server.background import serve_process
from server_hostile import memory  # benchmarks/ is on the path when this file is run


def prompt_text(mb: float) -> str:
    """~mb MB of word-like text (numbered words: more tokens per character than prose, so costlier to count)."""
    words, size, i = [], 0, 0
    while size < mb * 1e6:
        word = f"token{i} and prose number {i % 977};"
        words.append(word)
        size, i = size + len(word) + 1, i + 1
    return " ".join(words)


def stream_gaps(url: str, tokens: int, started=None) -> tuple[list[float], int]:
    """One streamed chat completion of `tokens` tokens -> (seconds between successive non-empty content /
    reasoning deltas, completion tokens). `started` (an Event) is set at the first delta."""
    body = {"messages": [{"role": "user", "content": "Tell me a long story about caches."}], "max_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    times, usage = [], 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            if delta.get("content") or delta.get("reasoning_content"):
                times.append(time.perf_counter())
                if started is not None and len(times) == 1:
                    started.set()
    return [b - a for a, b in itertools.pairwise(times)], usage


def send_big(url: str, body: bytes, go, report) -> None:
    """A client process: waits for `go`, posts the pre-encoded body, reports (status, seconds, error message)."""
    go.wait()
    t = time.perf_counter()
    try:
        r = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=600,
                       headers={"Content-Type": "application/json"})
        message = r.json()["error"]["message"][:100] if r.status_code >= 400 else ""
        report.put((str(r.status_code), time.perf_counter() - t, message))
    except httpx.HTTPError as e:
        report.put((type(e).__name__, time.perf_counter() - t, str(e)[:100]))


def with_big_prompts(url: str, tokens: int, n: int, mb: float) -> tuple[list[float], int, list[tuple]]:
    ctx = mp.get_context("fork")
    body = json.dumps({"messages": [{"role": "user", "content": prompt_text(mb)}], "max_tokens": 1}).encode()
    go, report = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=send_big, args=(url, body, go, report)) for _ in range(n)]
    for p in procs:
        p.start()  # forked before the stream opens; they wait for its first token
    gaps, usage = stream_gaps(url, tokens, started=go)
    results = [report.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return gaps, usage, results


def p99(gaps: list[float]) -> float:
    return statistics.quantiles(gaps, n=100, method="inclusive")[98]


def describe(label: str, gaps: list[float], usage: int) -> str:
    return (f"  {label}: {usage} tokens, {len(gaps) + 1} deltas over {sum(gaps):.2f} s; gap median "
            f"{statistics.median(gaps) * 1e3:.0f} ms, p99 {p99(gaps) * 1e3:.0f} ms, worst {max(gaps) * 1e3:.0f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-mb", type=float, default=5.0, help="size of each big prompt in MB (10^6 bytes)")
    parser.add_argument("--big-requests", type=int, default=6, help="big-prompt requests sent during the stream")
    parser.add_argument("--tokens", type=int, default=300, help="tokens of the measured stream")
    parser.add_argument("--serve-args", default="", help="extra `dsv4 serve` flags (e.g. a longer --max-model-len, "
                                                         "so the big prompts are tokenized further before refusal)")
    args = parser.parse_args()
    if args.big_requests < 1 or args.tokens < 3 or args.prompt_mb <= 0:
        parser.error("--big-requests must be at least 1, --tokens at least 3 and --prompt-mb above 0")
    serve_args = shlex.split(args.serve_args)
    with serve_process(serve_args, env={"OMP_NUM_THREADS": "1"}) as (url, server):
        print(f"dsv4 serve (tiny{', ' + args.serve_args if serve_args else ''}): {memory(server.pid)}")
        stream_gaps(url, 8)  # warm
        alone, alone_usage = stream_gaps(url, args.tokens)
        print(describe("(a) stream alone", alone, alone_usage), flush=True)
        loaded, loaded_usage, results = with_big_prompts(url, args.tokens, args.big_requests, args.prompt_mb)
        print(describe(f"(b) stream while {args.big_requests} x {args.prompt_mb:g} MB prompts arrive",
                       loaded, loaded_usage))
        print(f"  ratio (b)/(a): worst gap {max(loaded) / max(alone):.2f}x, p99 gap {p99(loaded) / p99(alone):.2f}x")
        statuses = sorted({s for s, _, _ in results})
        print(f"  big requests: status {', '.join(f'{s} x{sum(r[0] == s for r in results)}' for s in statuses)}; "
              f"latency min {min(r[1] for r in results):.2f} s, max {max(r[1] for r in results):.2f} s "
              f"(sent from their own processes at the stream's first delta)")
        for message in sorted({m for _, _, m in results if m}):
            print(f"    {message!r}")
        print(f"  after: {memory(server.pid)}; server alive: {server.poll() is None}")


if __name__ == "__main__":
    main()

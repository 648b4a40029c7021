"""`dsv4 serve` (tiny random-weight model, engine in its own process, defaults otherwise) under the two attacks
of #16, each against the same server idle in the same run:

1. big bodies: a 200 MB chat request with its Content-Length, the same 200 MB chunked, a 15 MB prompt (under
   the body limit, over the characters the context can hold) and an 8 MB one of short words (under that, over
   the context's tokens): the replies, how long each took, and the server's peak RSS (VmHWM: the most it ever
   held) after each;
2. half-open connections: N connections (default 20,000, from two client processes: each may hold only
   `ulimit -n` descriptors) that send part of a request head and never finish it, held open while a legitimate
   `GET /v1/models` is timed every 0.25 s, against its latency on the idle server (ratio); how many of the
   attacker's connections the server closed, and the descriptors it held.

Prints numbers; asserts nothing. Run: `.venv/bin/python benchmarks/server_hostile.py [--half-open 20000]
[--body-mb 200]`.
"""

import argparse
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import time
from pathlib import Path

import httpx

from dsv4.server.background import serve_process

MIB = 1 << 20


def raise_nofile() -> tuple[int, int]:
    """This process's soft descriptor limit raised to its hard one -> (soft, hard)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine_limits() -> str:
    def read(path: str) -> str:
        try:
            return " ".join(Path(path).read_text().split())
        except OSError:
            return "?"

    soft, hard = raise_nofile()
    return (f"ulimit -n {soft}/{hard}, fs.nr_open {read('/proc/sys/fs/nr_open')}, net.core.somaxconn "
            f"{read('/proc/sys/net/core/somaxconn')}, ephemeral ports {read('/proc/sys/net/ipv4/ip_local_port_range')}")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory(pid: int) -> str:
    """Peak and current RSS of the server process, and of its engine process."""
    parts = [f"server peak {status_kb(pid, 'VmHWM') / 1024:.0f} MB (now {status_kb(pid, 'VmRSS') / 1024:.0f})"]
    for child in children(pid):
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():  # multiprocessing's helper
            parts.append(f"engine process peak {status_kb(child, 'VmHWM') / 1024:.0f} MB")
    return ", ".join(parts)


def latency(url: str) -> float:
    """Seconds for one GET /v1/models on a new connection (inf when it fails or takes over 30 s)."""
    t = time.perf_counter()
    try:
        ok = httpx.get(f"{url}/v1/models", timeout=30).status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - t if ok else float("inf")


def send_body(url: str, body_bytes: int, chunked: bool) -> tuple[str, float, int]:
    """POSTs a chat request of `body_bytes` (a prompt of "a"s) -> (the reply's status line or what happened,
    seconds, MB the server took before it answered or closed)."""
    host, port = url.removeprefix("http://").split(":")
    head, tail = b'{"messages": [{"role": "user", "content": "', b'"}], "max_tokens": 1}'
    fill = body_bytes - len(head) - len(tail)
    framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}".encode()
    t, sent = time.perf_counter(), 0
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: dsv4\r\nContent-Type: application/json\r\n" +
                  framing + b"\r\n\r\n")
        block = b"a" * MIB
        pieces = [head] + [block] * (fill // MIB) + [b"a" * (fill % MIB), tail]
        try:
            for piece in pieces:
                if select.select([s], [], [], 0)[0]:
                    break  # the server has answered (or closed): stop sending
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked and sent == body_bytes:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        s.settimeout(120)
        try:
            reply = s.recv(65536).split(b"\r\n", 1)[0].decode() or "closed without a reply"
        except OSError as e:
            reply = f"connection {type(e).__name__}"
    return reply, time.perf_counter() - t, sent // MIB


def long_prompt(url: str, text: str) -> tuple[str, float]:
    t = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=600,
                   json={"messages": [{"role": "user", "content": text}], "max_tokens": 1})
    message = r.json()["error"]["message"] if r.status_code >= 400 else ""
    return f"{r.status_code} {message[:110]}", time.perf_counter() - t


def hold_half_open(url: str, n: int, ready, stop, report) -> None:
    """A client process: n connections that send part of a request head, held until `stop` is set; reports
    (opened, closed by the server)."""
    raise_nofile()
    host, port = url.removeprefix("http://").split(":")
    held, failed = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: dsv4\r\n")
            held.append(s)
        except OSError:
            failed += 1
    ready.set()
    stop.wait()
    closed = 0
    for s in held:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    report.put((len(held), failed, closed))


def half_open_attack(url: str, pid: int, n: int, baseline: float) -> None:
    ctx = mp.get_context("fork")
    clients = 2 if n > 10_000 else 1
    ready, stop, report = [ctx.Event() for _ in range(clients)], ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=hold_half_open, args=(url, n // clients, r, stop, report)) for r in ready]
    during: list[float] = []
    t = time.perf_counter()
    for p in procs:
        p.start()
    while not all(r.is_set() for r in ready):  # a legitimate client keeps asking while the flood arrives
        during.append(latency(url))
        time.sleep(0.25)
    flood_s = time.perf_counter() - t
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    held = [latency(url) for _ in range(20)]
    stop.set()
    results = [report.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    opened, failed, closed = (sum(r[i] for r in results) for i in range(3))
    print(f"  {opened} half-open connections opened in {flood_s:.1f} s ({failed} connects failed), from "
          f"{clients} client processes; the server held {fds} descriptors, closed {closed} of them")
    print(f"  GET /v1/models while they arrived: {len(during)} requests, median {statistics.median(during) * 1e3:.0f} "
          f"ms, max {max(during) * 1e3:.0f} ms, failed {sum(x == float('inf') for x in during)}")
    med = statistics.median(held)
    print(f"  GET /v1/models with all held: median {med * 1e3:.1f} ms = {med / baseline:.2f}x idle, max "
          f"{max(held) * 1e3:.1f} ms, failed {sum(x == float('inf') for x in held)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--half-open", type=int, default=20_000)
    parser.add_argument("--body-mb", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {machine_limits()}")
    with serve_process([], env={"OMP_NUM_THREADS": "1"}, preexec_fn=raise_nofile) as (url, server):
        latency(url)  # warm
        idle = statistics.median(latency(url) for _ in range(20))
        print(f"dsv4 serve (tiny, defaults): idle GET /v1/models {idle * 1e3:.1f} ms; {memory(server.pid)}")
        print("1. big bodies")
        for chunked in (False, True):
            reply, seconds, mb = send_body(url, args.body_mb * MIB, chunked)
            print(f"  {args.body_mb} MB body, {'chunked' if chunked else 'with Content-Length'}: {reply!r} after "
                  f"{seconds * 1e3:.0f} ms, {mb} MB sent; {memory(server.pid)}")
        words = " ".join(f"w{i}" for i in range(2_000_000))[:8_000_000]  # ~1.5 characters a token
        for label, text in (("15 MB prompt of one letter (under the body limit)", "a" * 15 * MIB),
                            ("8 MB prompt of words (under the character bound)", words)):
            reply, seconds = long_prompt(url, text)
            print(f"  {label}: {reply!r} in {seconds * 1e3:.0f} ms; {memory(server.pid)}")
        print(f"  still answering: GET /v1/models {latency(url) * 1e3:.1f} ms")
        print(f"2. {args.half_open} half-open connections")
        half_open_attack(url, server.pid, args.half_open, idle)
        print(f"  after: GET /v1/models {latency(url) * 1e3:.1f} ms; {memory(server.pid)}; "
              f"server alive: {server.poll() is None}")


if __name__ == "__main__":
    main()

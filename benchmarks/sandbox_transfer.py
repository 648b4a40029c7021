"""Transfer throughput and host memory of the `process` sandbox: upload, download, write_file and read_file.

Each measurement runs in a child process of its own, so its host peak memory (VmHWM, reset just before the
transfer) is its own. Prints MB/s and the peak's growth over the RSS before the transfer, for each size; then
the time ratio of the largest to the smallest size next to the size ratio (equal when time is linear). With
`--peer-src DIR` (a `src/` of another dsv4 checkout, e.g. the previous commit's), the same runs with that code
are printed next to these. Nothing is asserted.
Run: `.venv/bin/python benchmarks/sandbox_transfer.py [--sizes 25 50 100] [--peer-src /tmp/old/src]`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPS = ("upload", "download", "write_file", "read_file")


def vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def one(op: str, mb: int) -> dict:
    """Runs in the child: one transfer of `mb` MiB; seconds and host peak growth (MiB)."""
    from dsv4.sandbox import Sandbox

    size = mb << 20
    with tempfile.TemporaryDirectory() as tmp, Sandbox.create("process", memory_limit_mb=4096) as sb:
        host = Path(tmp) / "data"
        if op in ("upload", "write_file"):
            host.write_bytes(os.urandom(size))
            payload = host.read_bytes() if op == "write_file" else None
        else:
            sb.run_shell(f"head -c {size} /dev/urandom > data", timeout=120)
        run = {"upload": lambda: sb.upload(host, "/workspace/data"),
               "download": lambda: sb.download("/workspace/data", host),
               "write_file": lambda: sb.write_file("data", payload),
               "read_file": lambda: sb.read_file("data", max_bytes=size)}[op]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = vm_kb("VmRSS")
        t = time.perf_counter()
        run()
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "peak_mb": (vm_kb("VmHWM") - before) / 1024}


def measure(op: str, mb: int, src: str | None, timeout: float) -> dict | None:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if src:
        env["PYTHONPATH"] = src
    try:
        out = subprocess.run([sys.executable, __file__, "--one", op, str(mb)], env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc={out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def cell(r: dict | None, mb: int) -> str:
    if r is None:
        return "timed out"
    if "error" in r:
        return r["error"][:40]
    return f"{mb / r['seconds']:7.1f} MB/s  peak +{r['peak_mb']:6.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100], help="MiB per transfer")
    ap.add_argument("--peer-src", help="another checkout's src/ to compare with")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    impls = [("this", None)] + ([("peer", args.peer_src)] if args.peer_src else [])
    print(f"{'op':<11}{'MiB':>5}  " + "".join(f"{name:<36}" for name, _ in impls))
    for op in OPS:
        rows = {}
        for mb in args.sizes:
            rows[mb] = [measure(op, mb, src, args.timeout) for _, src in impls]
            print(f"{op:<11}{mb:>5}  " + "".join(f"{cell(r, mb):<36}" for r in rows[mb]), flush=True)
        lo, hi = min(args.sizes), max(args.sizes)
        for (name, _), a, b in zip(impls, rows[lo], rows[hi], strict=True):
            if a and b and "seconds" in a and "seconds" in b:
                print(f"{'':<16}{name}: time {hi} MiB / {lo} MiB = {b['seconds'] / a['seconds']:.2f} "
                      f"(size ratio {hi / lo:.2f})")


if __name__ == "__main__":
    main()

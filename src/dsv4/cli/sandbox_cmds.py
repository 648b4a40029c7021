"""`dsv4 sandbox run` and `dsv4 sandbox check`: one command in a fresh sandbox; which backends run here."""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from dsv4.sandbox import BackendUnavailable, ContainerConfig, Sandbox, SandboxError


def register(sub) -> None:
    p = sub.add_parser("sandbox", help="run commands in dsv4 sandboxes")
    cmds = p.add_subparsers(dest="sandbox_command", required=True, metavar="SUBCOMMAND")
    r = cmds.add_parser("run", help="run one shell command in a fresh sandbox and print its output")
    r.add_argument("cmd", help="shell command")
    r.add_argument("--backend", default="process", choices=("process", "container", "vm"))
    r.add_argument("--rootfs", help="image directory or tarball (container backend)")
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--network", default="none", help="none, loopback, all (public hosts, through the proxy), or "
                   "comma-separated host:port list")
    r.add_argument("--memory-mb", type=int, default=1024)
    r.add_argument("--pids", type=int, default=128)
    r.set_defaults(func=cmd_run)
    c = cmds.add_parser("check", help="try every backend and say why any cannot run on this machine")
    c.set_defaults(func=cmd_check)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        with Sandbox.create(args.backend, rootfs=args.rootfs and Path(args.rootfs), network_rules=args.network,
                            memory_limit_mb=args.memory_mb, pids_limit=args.pids) as sb:
            r = sb.run_shell(args.cmd, timeout=args.timeout)
    except (SandboxError, ValueError) as e:  # ValueError: a --network rule that is not one
        print(f"dsv4 sandbox run: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.timed_out or r.truncated:
        print(f"[timed_out={r.timed_out} truncated={r.truncated}]", file=sys.stderr)
    return r.exit_code if r.exit_code >= 0 else 128 - r.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as d:
        rootfs = Path(d)
        rootfs.chmod(0o755)
        busybox = shutil.which("busybox")
        if busybox:
            (rootfs / "bin").mkdir()
            shutil.copy(busybox, rootfs / "bin" / "busybox")
            (rootfs / "bin" / "sh").symlink_to("busybox")
        backends = [("function", "function"), ("process", "process"),
                    ("container/bwrap", ContainerConfig(image=rootfs)),
                    ("container/runsc", ContainerConfig(image=rootfs, runtime="runsc")), ("vm", "vm")]
        for name, backend in backends:
            print(f"{name:<16} {probe(backend)}", flush=True)
    return 0


def probe(backend) -> str:
    try:
        with Sandbox.create(backend, functions={"ok": lambda: "ok"}) as sb:
            if backend == "function":
                return "runs" if sb.call("ok").value == "ok" else "broken"
            r = sb.run_shell("echo ok", timeout=30)
            return "runs" if r.stdout == "ok\n" else f"broken: {r!r}"
    except BackendUnavailable as e:
        return f"unavailable: {e}"

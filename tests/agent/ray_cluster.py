"""A real Ray cluster on this machine for the tests: a head and worker nodes, each `ray start --block` in a session
of its own (under nice 19, 1 CPU, a 100 MB object store, a temporary directory), so a node can be killed whole
(raylet and workers, as when a machine dies) and nothing is left running at the end."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODE_ARGS = ["--num-cpus", "1", "--object-store-memory", "100000000", "--disable-usage-stats", "--block"]
# a dead node's tasks are rescheduled once the head misses its health checks: 5 refused checks 1 s apart (a dead
# raylet refuses at once; a slow one still has the default timeout to answer)
HEAD_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5",
            "RAY_USAGE_STATS_ENABLED": "0"}


def ray_command() -> list[str]:
    script = Path(sys.executable).with_name("ray")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


class LocalCluster:
    def __init__(self):
        # short: Ray's unix sockets live under it (a path of at most 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="dsv4ray-", dir="/tmp"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}  # Ray node id -> its `ray start` (its session's leader)

    def start_head(self) -> str:
        return self._start(["--head", "--port", str(self.port), "--temp-dir", str(self.root),
                            "--include-dashboard=false"], "head")

    def add_worker(self) -> str:
        return self._start(["--address", self.address], f"worker{len(self.nodes)}")

    def _start(self, args: list[str], name: str) -> str:
        """Start a node, wait until the cluster lists it alive -> its node id."""
        import ray

        before = set(self.nodes)
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen(["nice", "-n", "19", *ray_command(), "start", "--node-ip-address", "127.0.0.1",
                                 *args, *NODE_ARGS], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **HEAD_ENV})
        log.close()
        deadline = time.monotonic() + 180
        ray.init(address=self.address, logging_level="warning")
        try:
            while time.monotonic() < deadline:
                alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                new = alive - before
                if len(new) == 1:
                    node = new.pop()
                    self.nodes[node] = proc
                    return node
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        finally:
            ray.shutdown()
        raise RuntimeError(f"ray node {name} did not join: {(self.root / f'{name}.log').read_text()[-2000:]}")

    def running(self, node: str, function: str) -> bool:
        """Whether a worker of `node` is running a task of `function` (Ray titles it `ray::<function>`)."""
        sid = self.nodes[node].pid
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and os.getsid(int(pid)) == sid:
                    if (Path("/proc") / pid / "cmdline").read_bytes().startswith(f"ray::{function}".encode()):
                        return True
            except OSError:  # gone meanwhile
                continue
        return False

    def kill(self, node: str) -> None:
        """The node dies at once: every process of its session killed."""
        _kill_session(self.nodes[node], signal.SIGKILL)

    def close(self) -> None:
        for proc in self.nodes.values():
            _kill_session(proc, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self.nodes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_session(proc, signal.SIGKILL)  # what is left of the node, its workers included
            proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_session(leader: subprocess.Popen, sig: signal.Signals) -> None:
    """`sig` to every process in the session `leader` started (Ray's workers set their own process groups)."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.getsid(int(pid)) == leader.pid:
                os.kill(int(pid), sig)
        except (ProcessLookupError, PermissionError):
            continue

"""Harbor tasks spread over a Ray cluster (`dsv4 agent-tasks --ray`): each task is a Ray task that runs
`harbor.run_task` on some node, in a sandbox of that node, against the endpoint every node shares (an
`EndpointAgent` travels by value; "oracle" and "nop" need none).

Nothing but Ray is assumed of the cluster: no shared filesystem. A task's directory travels as a gzipped tar and
is unpacked on the node; its result and trajectory come back to where the command runs. A task whose worker or
node dies is run again once (Ray's `max_retries`); an error of the task itself is its result, never retried.
Ray is an optional extra, imported only here, when a run asks for it.
"""

import io
import ipaddress
import socket
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from .harbor import Task, TaskResult, load_task, run_task

INSTALL_HINT = "pip install 'dsv4[cluster]'"
RETRIES = 1  # a task whose node dies is rescheduled once


class ClusterError(RuntimeError):
    """Ray is not installed, or no cluster answers at the address; says which."""


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise ClusterError(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from e
    return ray


def pack_task(task: Task) -> bytes:
    """The task's directory as a gzipped tar (its top directory named after the task)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(task.path, arcname=task.name)
    return buf.getvalue()


def run_packed(name: str, archive: bytes, agent, backend: str, network: str) -> tuple[TaskResult, bytes | None]:
    """On a node: the task unpacked into a temporary directory and run by `run_task` -> (its result, recording
    the node, and the trajectory's JSON where the agent saved one)."""
    import ray

    with tempfile.TemporaryDirectory(prefix="dsv4-task-") as tmp:
        root, out = Path(tmp) / "task", Path(tmp) / "trajectories"
        out.mkdir()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")  # refuses links and paths that leave the directory
        result = run_task(load_task(root / name), agent, backend=backend, network=network, trajectory_dir=out)
        trajectory = out / f"{name}.json"
        saved = trajectory.read_bytes() if trajectory.is_file() else None
    result.node = {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    return result, saved


def run_on_ray(tasks: list[Task], agent, *, address: str = "auto", backend: str = "process", network: str = "none",
               trajectory_dir: Path | None = None, in_flight: int | None = None) -> Iterator[tuple[int, TaskResult]]:
    """Run `tasks` on the cluster at `address` ("auto", HOST:PORT or ray://HOST:PORT), yielding (index, result) as
    each one finishes. `in_flight`: tasks submitted at once (default: twice the cluster's CPUs; the rest wait here,
    not in the object store). Connects, and disconnects at the end (or when the caller stops early, which drops
    what is still running), unless this process is already connected."""
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"no Ray cluster to join at --ray {address}: {e}") from e
    try:
        yield from _gather(ray, tasks, agent, backend, network, trajectory_dir, in_flight)
    finally:
        if connected_here:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT that nothing answers on fails here, at once: `ray.init` would retry it for many minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # auto, or a Ray Client address (ray://), which fails by itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at --ray {address}: {e}") from e


def check_endpoint(agent, node_addresses: set[str]) -> None:
    """A model agent's endpoint on loopback reaches only this machine: refused when the cluster's nodes are on
    more than one address (every task elsewhere would fail to connect)."""
    url = getattr(agent, "url", None)
    if url is None or len(node_addresses) < 2:
        return
    host = urlsplit(url).hostname or ""
    if host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
        raise ClusterError(f"--endpoint {url} is this machine's loopback, which the cluster's other nodes "
                           f"({', '.join(sorted(node_addresses))}) cannot reach: give an address they reach")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _gather(ray, tasks, agent, backend, network, trajectory_dir, in_flight) -> Iterator[tuple[int, TaskResult]]:
    """Keep up to `in_flight` tasks submitted; yield each as it finishes."""
    alive = [n for n in ray.nodes() if n["Alive"]]
    check_endpoint(agent, {n["NodeManagerAddress"] for n in alive})
    nodes = [n["Resources"].get("CPU", 0.0) for n in alive]
    largest, total = max(nodes, default=1.0), sum(nodes)
    # SPREAD: independent sandboxes balance over the nodes rather than filling the first one
    remote = ray.remote(max_retries=RETRIES, retry_exceptions=False, scheduling_strategy="SPREAD")(run_packed)
    limit = in_flight or max(1, int(2 * total))
    queue, pending = deque(range(len(tasks))), {}
    while queue or pending:
        while queue and len(pending) < limit:
            i = queue.popleft()
            task = tasks[i]
            if task.unsupported:  # skipped with the reason: nothing to run on a node
                yield i, run_task(task, agent)
                continue
            # the task's cpus in Ray's accounting, so a node is not given more than it has (never more than the
            # largest node has, which would leave the task waiting forever)
            cpus = min(task.cpus or 1.0, largest)
            pending[remote.options(num_cpus=cpus).remote(task.name, pack_task(task), agent, backend, network)] = i
        if pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            yield i, _collect(ray, ref, tasks[i], trajectory_dir)


def _collect(ray, ref, task: Task, trajectory_dir: Path | None) -> TaskResult:
    """The task's result, its trajectory written to `trajectory_dir`; a task lost twice to dead workers or
    nodes, or whose code raised, is an error result saying so."""
    try:
        result, trajectory = ray.get(ref)
    except ray.exceptions.RayError as e:
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        return TaskResult(task.name, "error", detail=f"{type(e).__name__} on the cluster: {cause}"[:500])
    if trajectory is not None and trajectory_dir is not None:
        (trajectory_dir / f"{task.name}.json").write_bytes(trajectory)
    return result

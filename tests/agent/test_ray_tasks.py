"""`dsv4 agent-tasks --ray` on a real Ray cluster started here (a head and a worker node, separate processes): a
batch of Harbor tasks runs across both nodes with the results of a local run, and a worker node killed mid-run
loses no task (what ran there is rescheduled)."""

import json
import socket
import sys
import threading
import time

import pytest

from dsv4.agent.endpoint_agent import EndpointAgent
from dsv4.agent.harbor import load_task
from dsv4.agent.ray_tasks import ClusterError, check_endpoint, run_on_ray
from dsv4.cli import main
from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend

from .ray_cluster import LocalCluster
from .test_harbor import TASKS as HARBOR_TASKS

# (name, solution's answer, expected answer): passed, failed and a partial reward (reward.json)
SQUARES = [("square-2", 4, 4), ("square-3", 9, 9), ("square-4", 16, 16), ("wrong-5", 24, 25), ("square-6", 36, 36),
         ("half-7", "partial", 49)]


def make_task(root, name: str, answer, expected: int, sleep_s: float):
    """A Terminal-Bench-layout task: the environment copies input.txt, the oracle writes out.txt after `sleep_s`."""
    d = root / name
    for sub in ("environment", "solution", "tests"):
        (d / sub).mkdir(parents=True)
    (d / "instruction.md").write_text("Write the square of the number in /app/input.txt to /app/out.txt.\n")
    (d / "task.toml").write_text("[agent]\ntimeout_sec = 60\n[verifier]\ntimeout_sec = 30\n")
    (d / "environment" / "Dockerfile").write_text("FROM ubuntu:24.04\nWORKDIR /app\nCOPY input.txt ./\n")
    (d / "environment" / "input.txt").write_text(f"{int(expected ** 0.5)}\n")
    (d / "solution" / "solve.sh").write_text(f"sleep {sleep_s}\necho {answer} > /app/out.txt\n")
    (d / "tests" / "test.sh").write_text(
        'out=$(cat /app/out.txt)\n'
        'if [ "$out" = partial ]; then echo \'{"reward": 0.5}\' > /logs/verifier/reward.json; exit 0; fi\n'
        f'[ "$out" = {expected} ] && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt\n')
    return load_task(d)


def outcome(r: dict) -> tuple:
    """What a run decides about a task (where, when and how long aside)."""
    return r["name"], r["status"], r["reward"], r["detail"], r["agent_status"], r["verifier"]


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray is the optional extra dsv4[cluster]")
    c = LocalCluster()
    try:
        c.start_head()
        c.add_worker()
        yield c
    finally:
        c.close()


def test_tasks_spread_over_both_nodes_with_a_local_runs_results(cluster, make_sandbox, tmp_path, capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run
    for t in SQUARES:
        make_task(tmp_path / "tasks", *t, sleep_s=1)
    command = ["agent-tasks", str(tmp_path / "tasks"), "--agent", "oracle"]
    assert main([*command, "--out", str(tmp_path / "here")]) == 0
    assert main([*command, "--out", str(tmp_path / "ray"), "--ray", cluster.address]) == 0
    out = capsys.readouterr().out
    assert f"6 tasks on the Ray cluster at {cluster.address}" in out and "4/6 passed" in out
    assert all(f"[{socket.gethostname()} {node[:8]}]" in out for node in cluster.nodes)  # shown as each finished
    here, there = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("here", "ray"))
    assert {r["node"]["id"] for r in there} == set(cluster.nodes)  # both nodes ran tasks
    assert [outcome(r) for r in there] == [outcome(r) for r in here]  # in task order, decided alike
    assert [r["status"] for r in there] == ["failed", "passed", "passed", "passed", "passed", "failed"]


def test_the_model_agent_runs_on_a_node_against_the_shared_endpoint(cluster, make_sandbox, real_tokenizer, tmp_path):
    make_sandbox("process")
    command = 'echo "$GREETING $(wc -l < seed/numbers.txt)" > hello.txt'
    script = ["Write it.</think>" + render_calls([("bash", {"command": command})]), "Done.</think>Written."]
    with serving(create_app(ScriptedBackend(real_tokenizer, script))) as url:
        rc = main(["agent-tasks", str(HARBOR_TASKS / "hello-file"), "--out", str(tmp_path), "--ray", cluster.address,
                   "--endpoint", f"{url}/v1"])
    assert rc == 0
    (result,) = json.loads((tmp_path / "results.json").read_text())
    assert (result["status"], result["agent_status"], result["node"]["id"] in cluster.nodes) == \
        ("passed", "finished", True)
    (trajectory,) = tmp_path.glob("*/agent/dsv4-trajectory.json")  # gathered here, into its trial's directory
    assert json.loads(trajectory.read_text())["status"] == "finished"


def test_a_dead_nodes_tasks_are_rescheduled(cluster, make_sandbox, tmp_path):
    make_sandbox("process")
    doomed = cluster.add_worker()
    tasks = [make_task(tmp_path, *t, sleep_s=4) for t in SQUARES]
    box = {}

    def run_all():
        box["results"] = dict(run_on_ray(tasks, "oracle", address=cluster.address))

    run = threading.Thread(target=run_all)
    run.start()
    deadline = time.monotonic() + 120
    while not cluster.running(doomed, "run_packed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.running(doomed, "run_packed"), "no task reached the doomed node"
    cluster.kill(doomed)
    run.join(300)
    results = [box["results"][i] for i in range(len(tasks))]
    assert [(r.name, r.status, r.reward) for r in results] == \
        [("square-2", "passed", 1.0), ("square-3", "passed", 1.0), ("square-4", "passed", 1.0),
         ("wrong-5", "failed", 0.0), ("square-6", "passed", 1.0), ("half-7", "failed", 0.5)], \
        [r.detail for r in results]
    assert doomed not in {r.node["id"] for r in results}  # the task it held finished elsewhere


def test_a_loopback_endpoint_is_refused_for_a_cluster_of_several_hosts():
    agent = EndpointAgent("http://127.0.0.1:9000/v1", "m")
    with pytest.raises(ClusterError, match=r"127\.0\.0\.1:9000/v1 is this machine's loopback.*10\.0\.0\.2"):
        check_endpoint(agent, {"10.0.0.1", "10.0.0.2"})
    check_endpoint(agent, {"10.0.0.1"})  # one host: loopback is the same machine for every node
    check_endpoint(EndpointAgent("http://10.0.0.1:9000/v1", "m"), {"10.0.0.1", "10.0.0.2"})
    check_endpoint("oracle", {"10.0.0.1", "10.0.0.2"})


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ClusterError, match=r"pip install 'dsv4\[cluster\]'"):
        next(run_on_ray([make_task(tmp_path, *SQUARES[0], sleep_s=0)], "oracle"))


def test_ray_arguments_are_checked_before_anything_runs(tmp_path, capsys):
    pytest.importorskip("ray")
    hello, partial = str(HARBOR_TASKS / "hello-file"), str(HARBOR_TASKS / "partial")
    assert main(["agent-tasks", "--ray", hello, partial, "--agent", "oracle", "--out", str(tmp_path)]) == 2
    assert f"--ray '{hello}': expected auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err
    assert main(["agent-tasks", hello, "--ray", "--out", str(tmp_path)]) == 2
    assert "--ray with the model agent needs --endpoint" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert main(["agent-tasks", hello, "--agent", "oracle", "--out", str(tmp_path), "--ray", closed]) == 2
    assert f"no Ray cluster answers at --ray {closed}" in capsys.readouterr().err

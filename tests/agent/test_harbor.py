"""Harbor-format tasks run locally: the environment reproduced from a Dockerfile without a build (WORKDIR, ENV,
COPY), the oracle solution passing, doing nothing failing, a model agent's run verified the same way, partial
rewards from reward.json, and tasks that need an image build skipped with the reason."""

import json
from pathlib import Path

import pytest

from dsv4.agent import Agent, ToolRegistry, sandbox_tools
from dsv4.agent.harbor import TaskError, load_task, run_task
from dsv4.cli import main

from .conftest import ScriptedClient, call

TASKS = Path(__file__).parent / "tasks"


def test_loading_reads_the_dockerfile_without_building():
    task = load_task(TASKS / "hello-file")
    assert (task.workdir, task.env, task.agent_timeout_s, task.verifier_timeout_s) == \
        ("/app", {"GREETING": "hello", "MODE": "test"}, 60.0, 30.0)
    assert task.verifier_env == {"EXPECTED": "hello 3"} and task.unsupported is None
    assert [(p.name, target) for p, target in task.copies] == [("seed", "/app/seed"), ("notes.txt", "/app/notes.txt")]
    assert "RUN" in load_task(TASKS / "needs-build").unsupported
    assert [target for _, target in load_task(TASKS / "partial").copies] == ["/app/words.txt"]
    with pytest.raises(TaskError, match="no instruction.md"):
        load_task(TASKS)


@pytest.mark.parametrize("name, agent, status, reward", [
    ("hello-file", "oracle", "passed", 1.0),
    ("hello-file", "nop", "failed", 0.0),
    ("partial", "oracle", "failed", pytest.approx(2 / 3)),  # its solution sorts 2 lines of 3
    ("needs-build", "oracle", "skipped", None),
])
def test_oracle_and_nop(make_sandbox, name, agent, status, reward):
    make_sandbox("process")  # skips where bubblewrap cannot run
    result = run_task(load_task(TASKS / name), agent)
    assert (result.status, result.reward) == (status, reward), result.detail


def test_a_model_agent_is_verified_the_same_way(make_sandbox, tmp_path):
    make_sandbox("process")
    client = ScriptedClient([
        ("", "Count, then write.", [call("c1", "bash", command='echo "$GREETING $(wc -l < seed/numbers.txt)" > '
                                                                'hello.txt && cat hello.txt')]),
        ("Done.", None, [])])
    task = load_task(TASKS / "hello-file")
    result = run_task(task, lambda sb: Agent(client, ToolRegistry(sandbox_tools(sb))), trajectory_dir=tmp_path)
    assert (result.status, result.agent_status) == ("passed", "finished"), result.detail
    assert "hello 3" in json.loads((tmp_path / "hello-file.json").read_text())["messages"][3]["content"]
    assert client.requests[0][0][1]["content"] == task.instruction


def test_agent_tasks_command(make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    rc = main(["agent-tasks", str(TASKS / "hello-file"), str(TASKS / "needs-build"), "--agent", "oracle",
               "--out", str(tmp_path), "--concurrency", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "hello-file" in out and "passed" in out and "skipped" in out and "1/1 passed" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["name"], r["status"]) for r in results] == [("hello-file", "passed"), ("needs-build", "skipped")]

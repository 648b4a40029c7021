"""Harbor-format tasks run locally: the environment reproduced from a Dockerfile without a build (WORKDIR, ENV,
COPY), the oracle solution passing, doing nothing failing, a model agent's run verified the same way, partial
rewards from reward.json, and tasks that need an image build skipped with the reason."""

import json
import os
from pathlib import Path

import pytest

from dsv4.agent import Agent, ToolRegistry, sandbox_tools, task_image
from dsv4.agent.harbor import TaskError, load_task, run_task
from dsv4.cli import main

from .conftest import ScriptedClient, call

TASKS = Path(__file__).parent / "tasks"


@pytest.fixture(autouse=True)
def no_image_builder(monkeypatch):
    """These tasks run over the host's system: one that needs an image build is skipped, as on a machine without
    buildah (with it, it is built: test_task_image.py)."""
    monkeypatch.setattr(task_image, "find_builder", lambda: None)


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
    assert results[0]["verifier"] == {"exit_code": 0, "timed_out": False, "stdout": "", "stderr": ""}


def test_copy_follows_dockers_destination_rules():
    task = load_task(TASKS / "copy-rules")
    assert task.unsupported is None
    env = TASKS / "copy-rules" / "environment"
    assert [(str(p.relative_to(env)), target) for p, target in task.copies] == [
        ("config.txt", "/app/config.txt"),  # a file into an existing directory (the WORKDIR)
        ("a.txt", "/app/lib/a.txt"), ("b.txt", "/app/lib/b.txt"),  # several sources, dest/
        ("data", "/app/store"),  # a directory: its contents
        ("data/inner/deep.txt", "/app/renamed.txt"),  # a file to a new path
        ("config.txt", "/app/lib/config.txt"),  # JSON form, a wildcard, into lib made by an earlier step
        ("data/inner", "/app/store/inner"),
        ("a.txt", "/protected/a.txt"), ("data", "/protected/data"),
        ("run.sh", "/app/bin/run.sh"), ("data/inner", "/app/private")]  # --chmod=750, --chmod=700
    assert task.scratch_dirs == ["/protected"]
    assert task.modes == [("/app/bin/run.sh", "750"), ("/app/private/deep.txt", "700")]


@pytest.mark.parametrize("dockerfile, why", [
    ("COPY a.txt b.txt lib", "2 sources need a destination ending in /"),
    ("COPY *.txt /app/one", "2 sources need a destination ending in /"),
    ("COPY nothing* /app/", "nothing* matches no file of environment/"),
    ("COPY ../secret /app/", "../secret matches no file of environment/"),
    ("COPY a.txt /usr/local/bin/", "in the host's read-only /usr"),
    ("COPY a.txt /flag.txt", "to the file /flag.txt, right under /"),
    ("ADD pack.tar.gz /app/", "ADD unpacks a local archive"),
    ("COPY --parents a.txt /app/", "--parents is not reproduced here"),
    ("COPY --chmod=u+x a.txt /app/", "--chmod=u+x: only octal modes are reproduced here"),
])
def test_copy_steps_a_sandbox_cannot_reproduce_are_skipped_with_the_reason(tmp_path, dockerfile, why):
    import tarfile

    (tmp_path / "secret").write_text("s")
    task_dir = tmp_path / "t"
    (task_dir / "environment").mkdir(parents=True)
    (task_dir / "tests").mkdir()
    (task_dir / "instruction.md").write_text("x\n")
    (task_dir / "tests" / "test.sh").write_text("exit 0\n")
    for name in ("a.txt", "b.txt"):
        (task_dir / "environment" / name).write_text(name)
    with tarfile.open(task_dir / "environment" / "pack.tar.gz", "w:gz") as tar:
        tar.add(task_dir / "environment" / "a.txt", arcname="a.txt")
    (task_dir / "environment" / "Dockerfile").write_text(f"FROM ubuntu:24.04\nWORKDIR /app\n{dockerfile}\n")
    assert why in (load_task(task_dir).unsupported or "")


def test_copies_land_where_docker_puts_them_outside_the_workspace_too(make_sandbox):
    make_sandbox("process")
    result = run_task(load_task(TASKS / "copy-rules"), "nop")
    assert (result.status, result.reward) == ("passed", 1.0), (result.detail, result.verifier)
    assert "protected:./data/inner/deep.txt" in result.verifier["stdout"]


def test_a_multi_stage_copy_is_a_skipped_build_step():
    task = load_task(TASKS / "multi-stage")
    assert "COPY --from=build" in task.unsupported and "needs an image build" in task.unsupported
    assert "another image or build stage" in task.unsupported


def test_task_toml_limits_and_timeouts_apply_and_the_verifier_output_is_kept(make_sandbox):
    make_sandbox("process")
    task = load_task(TASKS / "limits")
    assert (task.memory_mb, task.cpus, task.agent_timeout_s) == (256, 2.0, 1.0)
    result = run_task(task, "oracle")
    assert (result.status, result.agent_status) == ("passed", "timed_out"), (result.detail, result.verifier)
    cpus = min(2, len(os.sched_getaffinity(0)))
    assert result.verifier["stdout"] == f"address space KiB=262144 nproc={cpus}\n"
    assert (result.verifier["stderr"], result.verifier["exit_code"]) == ("on stderr\n", 3)


@pytest.mark.parametrize("dockerfile, workdir, env, copies", [
    # the builder's RUN does not matter: the last stage is built from another image
    ("FROM golang AS build\nRUN go build\nFROM ubuntu\nWORKDIR /srv/x\nCOPY a.txt .\n", "/srv/x", {},
     [("a.txt", "/srv/x/a.txt")]),
    # FROM a stage starts where it ended: its WORKDIR, ENV and files, and its directories (sub/ exists)
    ("FROM ubuntu AS base\nWORKDIR /app\nENV A=1\nCOPY tree /app/\n"
     "FROM golang AS other\nWORKDIR /go\nENV C=3\nCOPY a.txt /go/\n"
     "FROM base\nENV B=2\nCOPY a.txt sub\n",
     "/app", {"A": "1", "B": "2"}, [("tree", "/app"), ("a.txt", "/app/sub/a.txt")]),
])
def test_only_the_last_build_stage_is_the_environment(tmp_path, dockerfile, workdir, env, copies):
    (tmp_path / "tests").mkdir()
    (tmp_path / "environment" / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "instruction.md").write_text("x\n")
    (tmp_path / "tests" / "test.sh").write_text("exit 0\n")
    (tmp_path / "environment" / "a.txt").write_text("a")
    (tmp_path / "environment" / "Dockerfile").write_text(dockerfile)
    task = load_task(tmp_path)
    assert task.unsupported is None
    assert (task.workdir, task.env) == (workdir, env)
    assert [(str(p.relative_to(tmp_path / "environment")), t) for p, t in task.copies] == copies


@pytest.mark.parametrize("toml, message", [
    ('[environment]\nmemory = "lots"\n', "not a size such as 512M"),
    ("[environment]\ncpus = 0\n", "too small"),
])
def test_bad_environment_limits_name_what_is_wrong(tmp_path, toml, message):
    (tmp_path / "tests").mkdir()
    (tmp_path / "instruction.md").write_text("x\n")
    (tmp_path / "tests" / "test.sh").write_text("exit 0\n")
    (tmp_path / "task.toml").write_text(toml)
    with pytest.raises(TaskError, match=message):
        load_task(tmp_path)


def test_verifier_output_is_kept_bounded():
    from dsv4.agent.harbor import bounded  # here: the suite's other tests stay runnable against older code

    text = "h" * 5000 + "m" * 10_000 + "t" * 5000
    kept = bounded(text)
    assert kept.startswith("h" * 4000) and kept.endswith("t" * 4000) and "[... 12000 characters cut ...]" in kept
    assert bounded("short") == "short"

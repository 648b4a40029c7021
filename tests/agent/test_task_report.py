"""`dsv4 agent-tasks`: the summary tables (counts, reasons, time, tokens) and the Harbor job directory it writes
(job and trial config.json / result.json, verifier output, exceptions, the agent's ATIF trajectory), checked
against Harbor 0.25's models and viewer when a Python with `harbor` is given (DSV4_HARBOR_PYTHON)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from dsv4.agent import Agent, Message, ToolCall, ToolRegistry, Trajectory, sandbox_tools
from dsv4.agent.atif import to_atif
from dsv4.agent.harbor import TaskResult, load_task, run_task
from dsv4.agent.harbor_job import SHORTUUID_ALPHABET, HarborJob
from dsv4.agent.messages import FunctionCall
from dsv4.agent.task_report import summary
from dsv4.agent.trajectory import Elided, Step
from dsv4.cli import main

from .conftest import ScriptedClient, call
from .test_harbor import no_image_builder  # noqa: F401  (autouse: needs-build is skipped, not built)

TASKS = Path(__file__).parent / "tasks"


def rendered(tables) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    for t in tables:
        console.print(t)
    return console.export_text()


def row(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_summary_tables_count_outcomes_with_time_tokens_and_reasons():
    results = [
        TaskResult("a", "passed", 1.0, "test.sh exit 0", 2.0, "finished", usage={"prompt_tokens": 300,
                                                                                "completion_tokens": 20}),
        TaskResult("b", "failed", 0.5, "test.sh exit 1", 3.0, "limits_exceeded", usage={"prompt_tokens": 100,
                                                                                       "completion_tokens": 5}),
        TaskResult("c", "error", None, "SandboxError: the sandbox died", 0.5),
        TaskResult("d", "skipped", None, "its Dockerfile runs RUN"),
        TaskResult("e", "skipped", None, "its Dockerfile runs RUN"),
    ]
    text = rendered(summary(results, wall_s=4.25))
    assert row(text, "a") == ["a", "passed", "1.00", "2.0", "320", "finished", "test.sh exit 0"]
    assert row(text, "c")[1:5] == ["error", "-", "0.5", "-"]
    # passed, failed, errored, skipped; mean reward over the tasks run (an error scores 0); seconds; tokens
    assert row(text, "1") == ["1", "1", "1", "2", "0.500", "5.5", "4.2", "425"]
    assert row(text, "skipped") == ["skipped", "d, e", "its Dockerfile runs RUN"]
    assert row(text, "error") == ["error", "c", "SandboxError: the sandbox died"]


def test_agent_tasks_writes_a_harbor_job(make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    out = tmp_path / "job-1"
    rc = main(["agent-tasks", str(TASKS / "hello-file"), str(TASKS / "partial"), str(TASKS / "needs-build"),
               "--agent", "oracle", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "1/2 passed (1 passed, 1 failed, 0 errored, 1 skipped)" in printed
    assert row(printed, "1")[:4] == ["1", "1", "0", "1"] and row(printed, "skipped")[1] == "needs-build"

    job = json.loads((out / "result.json").read_text())
    assert job["n_total_trials"] == 3 and job["finished_at"] is not None and "trial_results" not in job
    stats = job["stats"]
    assert (stats["n_completed_trials"], stats["n_errored_trials"], stats["n_pending_trials"]) == (3, 1, 0)
    evals = stats["evals"]["oracle__adhoc"]
    assert evals["metrics"] == [{"mean": pytest.approx((1 + 2 / 3) / 3)}] and evals["n_trials"] == 2
    assert set(evals["reward_stats"]["reward"]) == {"1.0", str(2 / 3)}
    config = json.loads((out / "config.json").read_text())
    assert config["job_name"] == "job-1" and [a["name"] for a in config["agents"]] == ["oracle"]
    assert len(config["tasks"]) == 3

    trials = {d.name.split("__")[0]: d for d in out.iterdir() if d.is_dir()}
    assert set(trials) == {"hello-file", "partial", "needs-build"}
    assert all(re.fullmatch(f"[{SHORTUUID_ALPHABET}]{{7}}", d.name.split("__")[1]) for d in trials.values())
    hello = json.loads((trials["hello-file"] / "result.json").read_text())
    assert hello["verifier_result"] == {"rewards": {"reward": 1.0}} and hello["exception_info"] is None
    assert hello["agent_info"]["name"] == "oracle" and hello["config"]["job_id"] == job["id"]
    assert hello["started_at"] <= hello["agent_execution"]["started_at"] <= hello["verifier"]["started_at"] \
        <= hello["finished_at"]
    assert (trials["hello-file"] / "verifier" / "reward.txt").read_text() == "1"
    assert (trials["hello-file"] / "verifier" / "test-stdout.txt").is_file()
    skipped = json.loads((trials["needs-build"] / "result.json").read_text())
    assert skipped["exception_info"]["exception_type"] == "TaskSkipped"
    assert "RUN" in (trials["needs-build"] / "exception.txt").read_text()
    assert json.loads((out / "results.json").read_text())[0]["status"] == "passed"  # dsv4's own list stays
    harbor = _harbor_reads(out)
    if harbor is not None:
        assert harbor == {"atif_steps": {}, "trials": 3, "completed": 3, "errored": 1, "input_tokens": None, "tasks": {
            "hello-file": [1.0, []], "partial": [pytest.approx(2 / 3), []], "needs-build": [None, ["TaskSkipped"]]}}


def test_a_model_trial_keeps_its_tokens_and_trajectory(make_sandbox, tmp_path):
    make_sandbox("process")
    client = ScriptedClient([
        ("", None, [call("c1", "bash", command='echo "$GREETING $(wc -l < seed/numbers.txt)" > hello.txt')]),
        ("Done.", None, [])])
    task = load_task(TASKS / "hello-file")
    result = run_task(task, lambda sb: Agent(client, ToolRegistry(sandbox_tools(sb)), sandbox=sb),
                      trajectory_dir=tmp_path)
    assert result.usage == {"steps": 2, "prompt_tokens": 200, "completion_tokens": 20}
    job = HarborJob(tmp_path / "job", "dsv4", "scripted", [task], version="0", environment={})
    trial = job.add(task, result, tmp_path / "hello-file.json")
    job.finish()
    r = json.loads((trial / "result.json").read_text())
    assert r["agent_result"]["n_input_tokens"] == 200 and r["agent_result"]["n_output_tokens"] == 20
    assert r["agent_info"]["model_info"] == {"name": "scripted", "provider": None}
    assert json.loads((trial / "agent" / "dsv4-trajectory.json").read_text())["status"] == "finished"
    atif = json.loads((trial / "agent" / "trajectory.json").read_text())
    assert [(s["step_id"], s["source"]) for s in atif["steps"]] == [(1, "system"), (2, "user"), (3, "agent"),
                                                                     (4, "agent")]
    first = atif["steps"][2]
    assert first["tool_calls"][0]["function_name"] == "bash" and "wc -l" in first["tool_calls"][0]["arguments"][
        "command"]
    assert first["observation"]["results"][0]["source_call_id"] == "c1" and first["metrics"]["prompt_tokens"] == 100
    assert atif["steps"][3]["message"] == "Done." and atif["final_metrics"]["total_completion_tokens"] == 20
    stats = json.loads((tmp_path / "job" / "result.json").read_text())["stats"]
    assert (stats["n_input_tokens"], stats["n_output_tokens"]) == (200, 20)
    assert list(stats["evals"]) == ["dsv4__scripted__adhoc"]
    harbor = _harbor_reads(tmp_path / "job")
    assert harbor is None or (harbor["input_tokens"], harbor["tasks"], harbor["atif_steps"]) == \
        (200, {"hello-file": [1.0, []]}, {trial.name: 4})


HARBOR_CHECK = """
import json, pathlib, sys
from fastapi.testclient import TestClient
from harbor.models.trajectories import Trajectory
from harbor.viewer.scanner import JobScanner
from harbor.viewer.server import create_app
job = pathlib.Path(sys.argv[1])
scanner = JobScanner(job.parent)  # what `harbor view` reads: every file must parse as Harbor's models
assert scanner.get_job_config(job.name) is not None and scanner.get_job_result(job.name) is not None
trials = scanner.list_trials(job.name)
assert all(scanner.get_trial_config(job.name, t) and scanner.get_trial_result(job.name, t) for t in trials)
viewer = TestClient(create_app(job.parent))
jobs = [j for j in viewer.get("/api/jobs").json()["items"] if j["name"] == job.name]
tasks = viewer.get(f"/api/jobs/{job.name}/tasks").json()["items"]
atif_steps = {}  # each ATIF trajectory, parsed by Harbor's model and served by the viewer
for t in trials:
    served = viewer.get(f"/api/jobs/{job.name}/trials/{t}/trajectory").json()
    if served is not None:
        atif_steps[t] = len(Trajectory.model_validate(served).steps)
print(json.dumps({"atif_steps": atif_steps, "trials": len(trials), "completed": jobs[0]["n_completed_trials"],
                  "errored": jobs[0]["n_errored_trials"], "input_tokens": jobs[0]["total_input_tokens"],
                  "tasks": {t["task_name"]: [t["avg_reward"], t["exception_types"]] for t in tasks}}))
"""


def _harbor_reads(job: Path) -> dict | None:
    """What Harbor's viewer (`harbor view`, unmodified) reads of the job, where a Python with harbor is given in
    DSV4_HARBOR_PYTHON (Harbor needs Python >= 3.12); None without one."""
    python = os.environ.get("DSV4_HARBOR_PYTHON")
    if not python:
        return None
    r = subprocess.run([python, "-c", HARBOR_CHECK, str(job)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_atif_gives_back_elided_texts_and_the_step_in_progress():
    messages = [Message(role="system", content="sys"), Message(role="user", content="task"),
                Message(role="assistant", content="", tool_calls=[ToolCall(id="a", function=FunctionCall(
                    name="bash", arguments='{"command": "ls"}'))]),
                Message(role="tool", tool_call_id="a", content="[elided to save context: 9 characters]"),
                Message(role="assistant", content="", tool_calls=[ToolCall(id="b", function=FunctionCall(
                    name="bash", arguments="{not json"))])]
    step = Step(index=0, finish_reason="tool_calls", usage={"prompt_tokens": 7, "completion_tokens": 3},
                duration_s=0.1)
    t = Trajectory(task="task", model="m", tools=["bash"], messages=messages, steps=[step],
                   partial=step.model_copy(update={"index": 1, "usage": {}}),
                   elided=[Elided(message=3, field="content", text="file1\nfile2")])
    atif = to_atif(t, "dsv4", "0", session_id="s")
    agent_steps = atif["steps"][2:]
    assert agent_steps[0]["observation"]["results"] == [{"source_call_id": "a", "content": "file1\nfile2"}]
    assert agent_steps[0]["metrics"] == {"prompt_tokens": 7, "completion_tokens": 3}
    assert agent_steps[1]["tool_calls"][0]["arguments"] == {"_raw": "{not json"} and "metrics" not in agent_steps[1]
    assert atif["extra"] == {"status": "running", "error": None} and atif["session_id"] == "s"


def test_progress_shows_tasks_as_they_finish_and_the_files_keep_task_order(make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    assert main(["agent-tasks", str(TASKS / "hello-file"), str(TASKS / "needs-build"), "--agent", "oracle",
                 "--out", str(tmp_path), "--concurrency", "2"]) == 0
    lines = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if line.startswith(("hello-file ", "needs-build "))]
    assert lines == ["needs-build", "hello-file"]  # the skipped task ends at once, the other runs its sandbox
    assert [r["name"] for r in json.loads((tmp_path / "results.json").read_text())] == ["hello-file", "needs-build"]

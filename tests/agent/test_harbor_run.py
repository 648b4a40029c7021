"""`harbor run` itself (Harbor 0.25, unmodified, in the Python 3.12 venv `.venv-harbor` that `make test` makes) on
TB2-layout tasks, with dsv4's sandbox as its environment (`dsv4.agent.harbor_environment`) and with dsv4's agent
loop as its agent (`dsv4.agent.harbor_agent`, against a scripted OpenAI-compatible endpoint): the rewards are
Harbor's own, read from the job directory it wrote."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend

from ..sandbox.test_container import busybox_rootfs  # noqa: F401  (fixture)
from ..sandbox.test_container import image_cache as private_image_cache  # noqa: F401  (autouse fixture)
from .test_harbor import TASKS
from .test_task_image import busybox_task  # noqa: F401  (fixture)

ROOT = Path(__file__).parents[2]
HARBOR_VENV = Path(os.environ.get("DSV4_HARBOR_VENV", ROOT / ".venv-harbor"))
ENVIRONMENT = "dsv4.agent.harbor_environment:SandboxEnvironment"
AGENT = "dsv4.agent.harbor_agent:Dsv4Agent"


@pytest.fixture(scope="module")
def harbor() -> Path:
    if not (HARBOR_VENV / ".installed").is_file():
        failed = HARBOR_VENV / ".failed"
        why = failed.read_text().strip() if failed.is_file() else "not made: run `make .venv-harbor/.installed`"
        pytest.skip(f"Harbor's own venv {HARBOR_VENV} (Harbor needs Python >= 3.12): {why}")
    return HARBOR_VENV / "bin" / "harbor"


def harbor_run(harbor: Path, task: Path, jobs: Path, *args: str) -> tuple[dict, Path]:
    """`harbor run` of one local task; (the trial's result.json as Harbor wrote it, the trial's directory)."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # LiteLLM's price list from its package, offline
    r = subprocess.run([str(harbor), "run", "-p", str(task), "--env", ENVIRONMENT, "-o", str(jobs),
                        "--job-name", "job", "-y", "-q", *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (trial,) = [p for p in (jobs / "job").iterdir() if p.is_dir()]
    return json.loads((trial / "result.json").read_text()), trial


@pytest.mark.parametrize("agent, reward", [("oracle", 1.0), ("nop", 0.0)])
def test_harbor_runs_a_task_in_a_dsv4_sandbox(make_sandbox, harbor, tmp_path, agent, reward):
    make_sandbox("process")  # skips where bubblewrap cannot run
    result, trial = harbor_run(harbor, TASKS / "hello-file", tmp_path, "-a", agent)
    assert result["exception_info"] is None, result["exception_info"]
    assert result["verifier_result"]["rewards"] == {"reward": reward}
    assert (trial / "verifier" / "reward.txt").read_text().strip() == str(int(reward))
    job = json.loads((tmp_path / "job" / "result.json").read_text())
    assert (job["n_total_trials"], job["stats"]["n_errored_trials"]) == (1, 0)
    assert [e["metrics"] for e in job["stats"]["evals"].values()] == [[{"mean": reward}]]


@pytest.mark.parametrize("agent, reward", [("oracle", 1.0), pytest.param("nop", 0.0, marks=pytest.mark.slow)])
def test_harbor_runs_a_task_that_needs_a_build_in_its_image(make_sandbox, harbor, busybox_task, tmp_path,  # noqa: F811
                                                            agent, reward):
    make_sandbox("process")
    # its Dockerfile RUNs (built by buildah into an OCI image); its verifier wants the solution run as root
    result, trial = harbor_run(harbor, busybox_task, tmp_path, "-a", agent)
    assert result["exception_info"] is None, result["exception_info"]
    assert result["verifier_result"]["rewards"] == {"reward": reward}
    assert (trial / "environment-build.log").is_file()


def test_harbor_runs_dsv4s_agent_in_a_dsv4_sandbox(make_sandbox, harbor, real_tokenizer, tmp_path):
    make_sandbox("process")
    command = 'cd seed && echo "$GREETING $(wc -l < numbers.txt)" > ../hello.txt && cat ../hello.txt'
    script = ["Write it.</think>" + render_calls([("bash", {"command": command})]),
              "Check it.</think>" + render_calls([("read_file", {"path": "../hello.txt"})]),
              "Done.</think>Written."]
    backend = ScriptedBackend(real_tokenizer, script)
    with serving(create_app(backend)) as url:
        result, trial = harbor_run(harbor, TASKS / "hello-file", tmp_path, "-a", AGENT, "-m", backend.model_name,
                                   "--ak", f"endpoint={url}/v1")
    assert result["exception_info"] is None, result["exception_info"]
    assert result["verifier_result"]["rewards"] == {"reward": 1.0}
    assert len(backend.calls) == 3  # the loop's model calls, each with the tools' results so far
    second = real_tokenizer.decode(backend.calls[1][0], skip_special_tokens=False)
    assert "exit code: 0\nstdout:\nhello 3" in second
    third = real_tokenizer.decode(backend.calls[2][0], skip_special_tokens=False)
    assert "<tool_result>hello 3\n</tool_result>" in third  # read_file, relative to the shell's cwd (/app/seed)
    assert result["agent_result"]["n_input_tokens"] > 0 and result["agent_result"]["metadata"]["status"] == "finished"
    atif = json.loads((trial / "agent" / "trajectory.json").read_text())
    calls = [c["function_name"] for s in atif["steps"] for c in s.get("tool_calls") or []]
    assert calls == ["bash", "read_file"]


def test_dsv4s_agent_in_a_built_image_without_bash(make_sandbox, harbor, busybox_task, real_tokenizer,  # noqa: F811
                                                    tmp_path):
    make_sandbox("process")
    # busybox: the tools' shell is sh (the image's /bin/bash only runs sh), write_file and read_file its applets
    script = ["Add.</think>" + render_calls([("bash", {"command": "cd /app && export N=$(cat n)"})]),
              "Write.</think>" + render_calls([("write_file", {"path": "solve.sh", "content": "add $N $OFFSET\n"})]),
              "Run.</think>" + render_calls([("bash", {"command": "sh solve.sh > answer.txt; id -u > uid.txt"})]),
              "Check.</think>" + render_calls([("read_file", {"path": "answer.txt"})]),
              "Done.</think>42."]
    backend = ScriptedBackend(real_tokenizer, script)
    with serving(create_app(backend)) as url:
        result, _ = harbor_run(harbor, busybox_task, tmp_path, "-a", AGENT, "-m", backend.model_name,
                               "--ak", f"endpoint={url}/v1")
    assert result["exception_info"] is None, result["exception_info"]
    assert "<tool_result>42\n</tool_result>" in real_tokenizer.decode(backend.calls[4][0], skip_special_tokens=False)
    assert result["verifier_result"]["rewards"] == {"reward": 1.0}


def test_harbors_agent_timeout_stops_dsv4s_agent_mid_command(make_sandbox, harbor, real_tokenizer, tmp_path):
    make_sandbox("process")
    task = shutil.copytree(TASKS / "hello-file", tmp_path / "hello-file")
    toml = (task / "task.toml").read_text().replace("timeout_sec = 60.0", "timeout_sec = 3.0")
    (task / "task.toml").write_text(toml)
    script = ["Wait.</think>" + render_calls([("bash", {"command": "sleep 60"})]), "Done.</think>Waited."]
    with serving(create_app(ScriptedBackend(real_tokenizer, script))) as url:
        result, trial = harbor_run(harbor, task, tmp_path / "jobs", "-a", AGENT, "-m", "dsv4-test",
                                   "--ak", f"endpoint={url}/v1")
    assert result["exception_info"]["exception_type"] == "AgentTimeoutError"
    assert result["verifier_result"]["rewards"] == {"reward": 0.0}  # verified all the same
    saved = json.loads((trial / "agent" / "dsv4-trajectory.json").read_text())
    # the command in flight was given up at once (not after its 60 s), and no model call came after it
    assert "the run was stopped while this command ran" in saved["steps"][0]["tool_results"][0]["output"]
    assert (saved["status"], len(saved["steps"])) == ("error", 1) and "stopped by Harbor" in saved["error"]

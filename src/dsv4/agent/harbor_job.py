"""A Harbor job directory for `dsv4 agent-tasks`: the files `harbor run` writes, so Harbor's tools (and anything that
reads its jobs) read dsv4's results. Layout and fields follow harbor 0.25 (`harbor.models.job.result.JobResult`,
`harbor.models.trial.result.TrialResult`, `harbor.models.trial.paths.TrialPaths`):

    <job>/config.json                       the job's config (JobConfig fields: job_name, jobs_dir, agents, tasks, ...)
    <job>/result.json                       JobResult without trial_results (as Harbor writes it), after every trial
    <job>/<task[:32]>__<7 chars>/config.json     the trial's TrialConfig
    <job>/<trial>/result.json               its TrialResult: rewards, agent tokens, phase timings, exception_info
    <job>/<trial>/agent/trajectory.json     the model agent's trajectory in ATIF (`dsv4.agent.atif`), and
    <job>/<trial>/agent/dsv4-trajectory.json   in dsv4's own format (`Trajectory.load`)
    <job>/<trial>/verifier/test-stdout.txt, test-stderr.txt, reward.txt
    <job>/<trial>/exception.txt             for a trial that errored

Harbor has no skipped trial (it builds every image): a task dsv4 skips is written as an errored trial whose
exception is `TaskSkipped` with the reason, so Harbor's counts and mean (an error scores 0) stay comparable.
`task_checksum` is a sha256 over the task's files (Harbor's is dirhash's; the two differ).
"""

import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .atif import to_atif
from .harbor import Task, TaskResult
from .trajectory import Trajectory

SHORTUUID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # shortuuid's, as Harbor's names


def trial_name(task_name: str) -> str:
    """Harbor's trial name: the task's name cut to 32 characters, `__` and 7 random shortuuid characters."""
    return f"{task_name[:32].rstrip('_-')}__{''.join(secrets.choice(SHORTUUID_ALPHABET) for _ in range(7))}"


def task_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


class HarborJob:
    """Writes a job directory as the tasks finish (`add`); `agent` is oracle, nop or the model agent's name."""

    def __init__(self, job_dir: Path, agent: str, model: str | None, tasks: list[Task], *, version: str,
                 environment: dict, n_concurrent: int = 1):
        self.dir, self.agent, self.model, self.version = Path(job_dir), agent, model, version
        self.id = str(uuid.uuid4())
        self.started_at = datetime.now(UTC).isoformat()
        self.environment = environment
        self.n_total = len(tasks)
        self.trials: list[dict] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        agent_config = {"name": agent, **({"model_name": model} if model else {})}
        self._write(self.dir / "config.json", {
            "job_name": self.dir.name, "jobs_dir": str(self.dir.parent), "n_attempts": 1,
            "n_concurrent_trials": n_concurrent, "environment": environment, "agents": [agent_config],
            "tasks": [{"path": str(t.path)} for t in tasks]})
        self._write_result(None)

    def add(self, task: Task, result: TaskResult, trajectory: Path | None = None) -> Path:
        """Writes the trial of `task` and updates the job's result.json; returns the trial's directory."""
        name = trial_name(task.name)
        trial_dir = self.dir / name
        for sub in ("agent", "verifier"):
            (trial_dir / sub).mkdir(parents=True, exist_ok=True)
        if trajectory is not None and trajectory.is_file():  # ATIF for Harbor, dsv4's own beside it
            kept = trial_dir / "agent" / "dsv4-trajectory.json"
            trajectory.replace(kept)
            atif = to_atif(Trajectory.load(kept), self.agent, self.version, session_id=name)
            self._write(trial_dir / "agent" / "trajectory.json", atif)
        config = {"task": {"path": str(task.path)}, "trial_name": name, "trials_dir": str(self.dir),
                  "agent": {"name": self.agent, **({"model_name": self.model} if self.model else {})},
                  "environment": self.environment, "job_id": self.id}
        self._write(trial_dir / "config.json", config)
        if result.verifier:
            (trial_dir / "verifier" / "test-stdout.txt").write_text(result.verifier.get("stdout", ""))
            (trial_dir / "verifier" / "test-stderr.txt").write_text(result.verifier.get("stderr", ""))
        if result.reward is not None:
            (trial_dir / "verifier" / "reward.txt").write_text(f"{result.reward:g}")
        exception = None
        if result.status in ("error", "skipped"):
            kind, sep, message = result.detail.partition(": ")  # run_task's errors: "ExceptionType: message"
            if result.status == "skipped" or not sep:
                kind, message = "TaskSkipped" if result.status == "skipped" else "TaskError", result.detail
            exception = {"exception_type": kind, "exception_message": message, "exception_traceback": "",
                         "occurred_at": _iso(max((t[-1] for t in result.phases.values()), default=None))
                         or datetime.now(UTC).isoformat()}
            (trial_dir / "exception.txt").write_text(f"{kind}: {message}\n")
        phases = {k: {"started_at": _iso(v[0]), "finished_at": _iso(v[-1])} for k, v in result.phases.items()}
        starts = [v[0] for v in result.phases.values()]
        ends = [v[-1] for v in result.phases.values()]
        model_info = {"name": self.model, "provider": None} if self.model else None
        trial = {
            "id": str(uuid.uuid4()), "task_name": task.name, "trial_name": name,
            "trial_uri": trial_dir.resolve().as_uri(), "task_id": {"path": str(task.path)}, "source": None,
            "task_checksum": task_checksum(task.path), "config": config,
            "agent_info": {"name": self.agent, "version": self.version, "model_info": model_info},
            "agent_result": {"n_input_tokens": result.usage["prompt_tokens"], "n_cache_tokens": None,
                             "n_output_tokens": result.usage["completion_tokens"], "cost_usd": None,
                             "metadata": {"status": result.agent_status, "steps": result.usage.get("steps")}}
            if "prompt_tokens" in result.usage else None,
            "verifier_result": None if result.reward is None else {"rewards": {"reward": result.reward}},
            "exception_info": exception,
            "started_at": _iso(min(starts, default=None)), "finished_at": _iso(max(ends, default=None)),
            "environment_setup": phases.get("environment_setup"), "agent_setup": None,
            "agent_execution": phases.get("agent_execution"), "verifier": phases.get("verifier"),
        }
        self._write(trial_dir / "result.json", trial)
        self.trials.append(trial)
        self._write_result(None)
        return trial_dir

    def finish(self) -> None:
        self._write_result(datetime.now(UTC).isoformat())

    def _write_result(self, finished_at: str | None) -> None:
        """JobResult (as Harbor writes it: trial_results left out), its stats from the trials so far."""
        key = f"{self.agent}__{self.model}__adhoc" if self.model else f"{self.agent}__adhoc"
        rewards: dict[str, list[str]] = {}
        exceptions: dict[str, list[str]] = {}
        tokens = {"n_input_tokens": None, "n_output_tokens": None}
        for t in self.trials:
            if t["verifier_result"] is not None:
                rewards.setdefault(str(t["verifier_result"]["rewards"]["reward"]), []).append(t["trial_name"])
            if t["exception_info"] is not None:
                exceptions.setdefault(t["exception_info"]["exception_type"], []).append(t["trial_name"])
            for k in tokens:
                if t["agent_result"] is not None:
                    tokens[k] = (tokens[k] or 0) + t["agent_result"][k]
        scores = [0 if t["verifier_result"] is None else t["verifier_result"]["rewards"]["reward"]
                  for t in self.trials]
        errored = sum(len(v) for v in exceptions.values())
        evals = {key: {"n_trials": sum(len(v) for v in rewards.values()), "n_errors": errored,
                       "metrics": [{"mean": sum(scores) / len(scores)}] if scores else [], "pass_at_k": {},
                       "reward_stats": {"reward": rewards} if rewards else {}, "exception_stats": exceptions}}
        stats = {"n_completed_trials": len(self.trials), "n_errored_trials": errored, "n_running_trials": 0,
                 "n_pending_trials": self.n_total - len(self.trials), "n_cancelled_trials": 0, "n_retries": 0,
                 "evals": evals, **tokens, "n_cache_tokens": None, "cost_usd": None}
        self._write(self.dir / "result.json", {
            "id": self.id, "started_at": self.started_at, "updated_at": datetime.now(UTC).isoformat(),
            "finished_at": finished_at, "n_total_trials": self.n_total, "stats": stats})

    @staticmethod
    def _write(path: Path, obj: dict) -> None:
        path.write_text(json.dumps(obj, indent=4))

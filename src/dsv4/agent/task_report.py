"""What `dsv4 agent-tasks` shows: a progress bar while tasks run (passed / failed / errored / skipped so far) and,
at the end, a table of every task and a summary of the counts, times and tokens, with why tasks were skipped or
errored (grouped: one reason, its tasks). Rendered with `rich`; without a terminal the bar is not drawn, each task
prints one line as it ends."""

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .harbor import TaskResult

OUTCOMES = (("passed", "passed"), ("failed", "failed"), ("error", "errored"), ("skipped", "skipped"))


def tokens_of(r: TaskResult) -> int | None:
    return r.usage["prompt_tokens"] + r.usage["completion_tokens"] if "prompt_tokens" in r.usage else None


def counts(results: list[TaskResult]) -> str:
    c = Counter(r.status for r in results)
    return ", ".join(f"{c[status]} {word}" for status, word in OUTCOMES)


class TaskProgress:
    """A bar of the tasks done, with the counts so far; `done(result)` as each task ends."""

    def __init__(self, total: int, console: Console):
        self.console, self.results = console, []
        self.progress = Progress(TextColumn("tasks"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)
        self.bar = self.progress.add_task(counts([]), total=total)

    def __enter__(self) -> "TaskProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def done(self, r: TaskResult) -> None:
        self.results.append(r)
        reward = "-" if r.reward is None else f"{r.reward:.2f}"
        where = f" [{r.node['host']} {r.node['id'][:8]}]" if r.node else ""  # a Ray node's host and id
        self.console.print(f"{r.name:<32} {r.status:<8} reward {reward:<5} {r.seconds:6.1f} s{where}  "
                           f"{r.detail[:80]}", markup=False, highlight=False)
        self.progress.update(self.bar, advance=1, description=counts(self.results))


def summary(results: list[TaskResult], wall_s: float) -> list[Table]:
    """The per-task table, the totals, and the reasons tasks were skipped or errored."""
    tasks = Table(title="tasks")
    for column in ("task", "status", "reward", "seconds", "tokens", "agent", "detail"):
        tasks.add_column(column, justify="right" if column in ("reward", "seconds", "tokens") else "left")
    for r in results:
        tokens = tokens_of(r)
        tasks.add_row(r.name, r.status, "-" if r.reward is None else f"{r.reward:.2f}", f"{r.seconds:.1f}",
                      "-" if tokens is None else str(tokens), r.agent_status or "-", r.detail[:100])
    totals = Table(title="summary")
    for column in ("passed", "failed", "errored", "skipped", "mean reward", "task seconds", "wall seconds",
                   "tokens"):
        totals.add_column(column, justify="right")
    c = Counter(r.status for r in results)
    ran = [r for r in results if r.status != "skipped"]
    mean = sum(r.reward or 0.0 for r in ran) / len(ran) if ran else None
    tokens = [t for t in map(tokens_of, results) if t is not None]
    totals.add_row(*(str(c[status]) for status, _ in OUTCOMES), "-" if mean is None else f"{mean:.3f}",
                   f"{sum(r.seconds for r in results):.1f}", f"{wall_s:.1f}", str(sum(tokens)) if tokens else "-")
    tables = [tasks, totals]
    reasons: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.status in ("skipped", "error"):
            reasons.setdefault((r.status, r.detail), []).append(r.name)
    if reasons:
        why = Table(title="skipped and errored: why")
        for column in ("status", "tasks", "reason"):
            why.add_column(column)
        for (status, detail), names in sorted(reasons.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
            why.add_row(status, ", ".join(names), detail)
        tables.append(why)
    return tables

"""Agent episodes: small workspace tasks solved with dsv4's own sandbox tools, and the conversations that solve
them, rendered exactly as `dsv4 agent` sends them to the server (its system prompt, the three tool schemas).

A task is files to put in the workspace, a request, and a plan: the tool calls that solve it, each with the
reasoning before it, then the reasoning and answer after the last result. `episode_request` runs the plan in a real
`Sandbox` through `sandbox_tools`, so every tool result is the exact text the tools return at serving time.
Names, paths, values and phrasings are drawn at random; `held_out=True` draws them from pools (and phrasing
templates) the training tasks never use: the eval's unseen tasks. Training tasks also make up some of their names.
"""

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dsv4.agent.loop import SYSTEM_PROMPT
from dsv4.agent.sandbox_tools import sandbox_tools
from dsv4.agent.tools import ToolRegistry
from dsv4.sandbox import Sandbox

from .phrasing import phrase
from .words import DIRS, KEYS, NOUNS, SUBJECTS, Names


@dataclass
class Call:
    reasoning: str
    tool: str
    args: dict
    mistaken: bool = False  # a wrong call (recovery.py): it must fail, and its turn is not trained on


class SlipMissed(Exception):
    """A call meant to be wrong succeeded (its slipped name still matched something)."""


@dataclass
class AgentTask:
    family: str
    prompt: str
    files: dict[str, str]  # workspace path -> content, written before the run
    calls: list[Call]
    final_reasoning: str
    answer: str
    expect_in_answer: str  # the task is solved when the final answer contains this ...
    expect_file: tuple[str, str] | None = None  # ... and this file holds this content
    expect_in_results: list[str] = field(default_factory=list)  # what each tool result must show (a plan check)


def _value(rng: random.Random) -> str:
    return str(rng.randint(10, 99999))


def read_value(rng: random.Random, names: Names) -> AgentTask:
    d, noun = names.pick(rng, DIRS)[0], names.pick(rng, NOUNS)[0]
    keys = names.pick(rng, KEYS, rng.randint(2, 5))
    values = [_value(rng) for _ in keys]
    key, value = rng.choice(list(zip(keys, values, strict=True)))
    path = f"{d}/{noun}.txt"
    prompt = phrase(rng, "read_value", names.held_out, names.unfamiliar)
    return AgentTask(
        "read_value", prompt.format(key=key, path=path),
        {path: "".join(f"{k}: {v}\n" for k, v in zip(keys, values, strict=True))},
        [Call(f"The {key} is in {path}. I will read that file.", "read_file", {"path": path})],
        f"{path} says {key}: {value}.", f"The {key} in {path} is {value}.", value,
        expect_in_results=[f"{key}: {value}"])


def find_file(rng: random.Random, names: Names) -> AgentTask:
    d = names.pick(rng, DIRS)[0]
    subjects = names.pick(rng, SUBJECTS, rng.randint(2, 5))
    key = names.pick(rng, KEYS)[0]
    values = {s: _value(rng) for s in subjects}
    subject = rng.choice(subjects)
    path = f"{d}/{subject}.cfg"
    prompt = phrase(rng, "find_file", names.held_out, names.unfamiliar)
    return AgentTask(
        "find_file", prompt.format(d=d, s=subject, key=key),
        {f"{d}/{s}.cfg": f"{key}: {v}\n" for s, v in values.items()},
        [Call(f"I need to see which files are in {d}.", "bash", {"command": f"ls {d}"}),
         Call(f"The file for {subject} is {path}. I will read it.", "read_file", {"path": path})],
        f"{path} sets {key}: {values[subject]}.", f"The {key} for {subject} is {values[subject]}.",
        values[subject], expect_in_results=[f"{subject}.cfg", f"{key}: {values[subject]}"])


def compute(rng: random.Random, names: Names) -> AgentTask:
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(1, 9999)
    op = rng.choice(["*", "+", "-"])
    expr = f"{a} {op} {b} + {c}"
    result = str(eval(expr))  # noqa: S307 - integers and operators built just above
    prompt = phrase(rng, "compute", names.held_out, names.unfamiliar)
    return AgentTask(
        "compute", prompt.format(e=expr), {},
        [Call(f"I will let the shell evaluate {expr}.", "bash", {"command": f"echo $(({expr}))"})],
        f"The shell printed {result}.", f"{expr} = {result}.", result, expect_in_results=[result])


def count_lines(rng: random.Random, names: Names) -> AgentTask:
    d, noun = names.pick(rng, DIRS)[0], names.pick(rng, NOUNS)[0]
    n = rng.randint(1, 60)
    words = names.pick(rng, NOUNS, 5)
    path = f"{d}/{noun}.log"
    prompt = phrase(rng, "count_lines", names.held_out, names.unfamiliar)
    return AgentTask(
        "count_lines", prompt.format(path=path), {path: "".join(f"{rng.choice(words)} {i}\n" for i in range(n))},
        [Call(f"wc -l counts the lines of {path}.", "bash", {"command": f"wc -l < {path}"})],
        f"wc printed {n}.", f"{path} has {n} lines.", str(n), expect_in_results=[str(n)])


def write_file(rng: random.Random, names: Names) -> AgentTask:
    d, noun = names.pick(rng, DIRS)[0], names.pick(rng, NOUNS)[0]
    content = f"{names.pick(rng, NOUNS)[0]} {_value(rng)}"
    path = f"{d}/{noun}.txt"
    prompt = phrase(rng, "write_file", names.held_out, names.unfamiliar)
    size = len(content.encode())
    return AgentTask(
        "write_file", prompt.format(path=path, c=content), {},
        [Call(f"I will write {content} to {path}.", "write_file", {"path": path, "content": content})],
        f"The tool wrote {size} bytes to {path}.", f"I wrote \"{content}\" to {path}.", path,
        expect_file=(path, content), expect_in_results=[f"wrote {size} bytes"])


def grep_file(rng: random.Random, names: Names) -> AgentTask:
    d = names.pick(rng, DIRS)[0]
    stems = names.pick(rng, NOUNS, rng.randint(2, 4))
    word, *others = names.pick(rng, SUBJECTS, 1 + len(stems))
    while any(word in o for o in others):  # grep would also match another file whose word holds this one
        word = names.pick(rng, SUBJECTS)[0]
    target = rng.choice(stems)
    files = {f"{d}/{n}.md": f"{word if n == target else others[i]} {_value(rng)}\n" for i, n in enumerate(stems)}
    prompt = phrase(rng, "grep_file", names.held_out, names.unfamiliar)
    return AgentTask(
        "grep_file", prompt.format(d=d, w=word), files,
        [Call(f"grep -l lists the files in {d} that contain {word}.", "bash", {"command": f"grep -l {word} {d}/*"})],
        f"Only {d}/{target}.md matches.", f"{d}/{target}.md mentions {word}.", f"{target}.md",
        expect_in_results=[f"{d}/{target}.md"])


FAMILIES: dict[str, Callable[[random.Random, Names], AgentTask]] = {
    f.__name__: f for f in (read_value, find_file, compute, count_lines, write_file, grep_file)}
# How often training draws each family. Run v8b solved held-out compute 4/4 and count_lines 3/4 but find_file and
# grep_file 0/4 (two calls, or a name picked out of several files) and mis-copied written lines: those get more.
TRAINING_WEIGHTS = {"read_value": 1.5, "find_file": 2.0, "compute": 0.75, "count_lines": 1.0, "write_file": 1.5,
                    "grep_file": 2.0}


def make_task(rng: random.Random, held_out: bool = False, family: str | None = None,
              invented: float = 0.0, unfamiliar: float = 0.0) -> AgentTask:
    """A task of `family` (else a random one), named from the held-out or training pools; a fraction `invented` of
    a training task's names are made-up words, a fraction `unfamiliar` of its requests hold made-up words."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; choose one of {sorted(FAMILIES)}")
    if held_out and (invented or unfamiliar):
        raise ValueError("held-out tasks are named and phrased from the held-out pools only; invented names and "
                         "unfamiliar words are for training")
    if family is None:
        family = rng.choices(list(TRAINING_WEIGHTS), weights=list(TRAINING_WEIGHTS.values()))[0]
    return FAMILIES[family](rng, Names(held_out, invented, unfamiliar))


def prepare(sandbox: Sandbox, task: AgentTask) -> None:
    """An empty workspace (the shell back in it) holding the task's files."""
    sandbox.run_shell("cd /workspace && find . -mindepth 1 -delete")
    for path, content in task.files.items():
        sandbox.write_file(path, content)


def episode_request(task: AgentTask, sandbox: Sandbox, thinking: bool = True, strict: bool = False) -> dict:
    """Runs the task's plan in `sandbox` (prepared for it) with the real tools -> the chat-completions request of
    the solved conversation, as `dsv4 agent` builds it (thinking off: no reasoning, `thinking` disabled; strict:
    the tools in OpenAI's strict form, as `dsv4 agent --strict-tools` offers them, and every call naming all of its
    tool's parameters in their order, null for those it leaves out: what the server's strict grammar enforces)."""
    registry = ToolRegistry(sandbox_tools(sandbox))
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}]
    for i, call in enumerate(task.calls):
        args = {k: call.args.get(k) for k in registry.tools[call.tool].parameters["properties"]} if strict \
            else call.args
        out = registry.call(call.tool, json.dumps(args))
        expected = task.expect_in_results[i] if i < len(task.expect_in_results) else ""
        if call.mistaken:
            if out.ok:
                raise SlipMissed(f"{task.family}: the wrong call {call.tool}({call.args}) returned {out.text!r}")
        elif not out.ok or expected not in out.text:
            raise RuntimeError(f"{task.family}: {call.tool}({call.args}) returned {out.text!r}; expected it to "
                               f"succeed and show {expected!r}")
        turn = {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": call.tool, "arguments": json.dumps(args)}}]}
        messages += [_reasoned(turn, call.reasoning, thinking),
                     {"role": "tool", "tool_call_id": f"call_{i}", "content": out.text}]
    messages.append(_reasoned({"role": "assistant", "content": task.answer}, task.final_reasoning, thinking))
    request = {"messages": messages, "tools": registry.schemas(strict)}
    return request if thinking else {**request, "thinking": {"type": "disabled"}}


def mistaken_turns(task: AgentTask) -> set[int]:
    """The message indices (in `episode_request`'s messages: system, user, then an assistant turn and its tool
    result per call) of the wrong calls' turns."""
    return {2 + 2 * i for i, call in enumerate(task.calls) if call.mistaken}


def _reasoned(turn: dict, reasoning: str, thinking: bool) -> dict:
    return {**turn, "reasoning_content": reasoning} if thinking else turn

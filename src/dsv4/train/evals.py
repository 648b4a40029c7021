"""What the evals ask and how they score, independent of how the model is served (the CLI runs them through the
engine, or the server, agent loop and sandbox).

- passkey: for each (length, depth) cell, prompts with a passkey at that depth of that many tokens; a reply is
  exact when the first number in it is the key.
- agent: held-out tasks (unseen names, paths, values and phrasings); solved when the run finishes with an answer
  holding the expected value (and the expected file written); tool calls counted as valid DSML when they parsed
  into a call of a known tool with arguments that fit its schema; reasoning retained when every tool-call turn's
  reasoning is in the prompt of the request that follows it (V4 with tools renders all earlier reasoning, so an
  agent must send it back).
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from dsv4.encoding import encode_request
from dsv4.encoding.tokens import DSML

from .episodes import FAMILIES, AgentTask, make_task
from .retrieval import passkey


@dataclass(frozen=True)
class PasskeyCase:
    length: int
    depth: float
    prompt: str
    key: str


def passkey_cases(count: Callable[[str], int], lengths: list[int], depths: list[float], samples: int,
                  seed: int = 1234) -> list[PasskeyCase]:
    """`samples` prompts per (length, depth); lengths in tokens (prompt and answer), the seed apart from training."""
    rng = random.Random(seed)
    cases = []
    for length in lengths:
        for depth in depths:
            for _ in range(samples):
                needle = passkey(rng, length, depth, count)
                prompt = encode_request({**needle.request, "messages": needle.request["messages"][:-1]})
                cases.append(PasskeyCase(length, depth, prompt, needle.value))
    return cases


def passkey_correct(reply: str, key: str) -> bool:
    found = re.search(r"\d+", reply)
    return found is not None and found.group() == key


def passkey_digits(reply: str, key: str) -> float:
    """The fraction of the key's digits the reply's first number has in the right place."""
    found = re.search(r"\d+", reply)
    got = found.group() if found else ""
    return sum(a == b for a, b in zip(got, key, strict=False)) / len(key)  # a shorter number misses the rest


def passkey_grid(cases: list[PasskeyCase], correct: list[bool], digits: list[float] | None = None) -> list[str]:
    """The accuracy grid (rows: lengths, columns: depths, % exact), the digit accuracy if given, then the overall
    exact-match line."""
    lengths = sorted({c.length for c in cases})
    depths = sorted({c.depth for c in cases})
    cell: dict[tuple[int, float], list[bool]] = {}
    for c, ok in zip(cases, correct, strict=True):
        cell.setdefault((c.length, c.depth), []).append(ok)
    lines = ["length \\ depth " + "".join(f"{d:>8.2f}" for d in depths) + "     all"]
    for n in lengths:
        row = [cell[(n, d)] for d in depths]
        hits = [ok for r in row for ok in r]
        lines.append(f"{n:>15}" + "".join(f"{100 * sum(r) / len(r):>7.0f}%" for r in row)
                     + f"{100 * sum(hits) / len(hits):>7.0f}%")
    if digits is not None:
        lines.append(f"digits in place: {100 * sum(digits) / len(digits):.1f}%")
    lines.append(f"passkey exact-match: {100 * sum(correct) / len(correct):.1f}% ({sum(correct)}/{len(correct)})")
    return lines


def held_out_tasks(n: int, seed: int = 4321, held_out: bool = True) -> list[AgentTask]:
    """n unseen agent tasks, the families in turn (held_out=False: from the training pools and phrasings, with
    fresh values: how well the model fits what it was trained on)."""
    rng = random.Random(seed)
    families = sorted(FAMILIES)
    return [make_task(rng, held_out=held_out, family=families[i % len(families)]) for i in range(n)]


@dataclass
class AgentResult:
    task: AgentTask
    status: str  # the run's ending: finished, length, limits, error ...
    solved: bool
    steps: int
    tool_calls: int  # calls attempted: parsed ones plus DSML left unparsed in the content
    valid_calls: int
    answer: str | None


INVALID_CALL = ("error: there is no tool", "error: invalid arguments")


def score_run(task: AgentTask, status: str, messages: list, steps: list, read_file) -> AgentResult:
    """A finished run -> its result. `messages`: the conversation (objects with role / content); steps: objects
    with `tool_results` (each with `output`) and `warnings` (what the endpoint's parser had to recover: a call in a
    step with any is not valid DSML); read_file(path) -> the workspace file's text (None if missing)."""
    answer = messages[-1].content if status == "finished" and messages[-1].role == "assistant" else None
    solved = answer is not None and states(answer, task.expect_in_answer)
    if solved and task.expect_file is not None:
        path, content = task.expect_file
        solved = read_file(path) == content
    unparsed = sum((m.content or "").count(f"<{DSML}invoke") for m in messages if m.role == "assistant")
    calls = unparsed + sum(len(s.tool_results) for s in steps)
    valid = sum(not s.warnings and not r.output.startswith(INVALID_CALL) for s in steps for r in s.tool_results)
    return AgentResult(task, status, solved, len(steps), calls, valid, answer)


def states(answer: str, expected: str) -> bool:
    """Whether `answer` holds `expected` whole: not inside a longer number or word (`7798` is not in `77988`, nor
    `5` in `55 lines`, nor `acorn.md` in `bacorn.md`)."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(expected)}(?![A-Za-z0-9])", answer) is not None


def reasoning_retained(messages: list[dict], tools: list[dict]) -> tuple[int, int]:
    """A conversation as an agent sent it (OpenAI wire dicts) -> (its assistant tool-call turns, those whose
    non-empty reasoning the prompt of the next request renders before `</think>`)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")]
    kept = 0
    for i in turns:
        reasoning = messages[i].get("reasoning_content")
        following = next((j for j in range(i + 1, len(messages)) if messages[j]["role"] == "assistant"), len(messages))
        kept += bool(reasoning) and f"{reasoning}</think>" in encode_request(
            {"messages": messages[:following], "tools": tools})
    return len(turns), kept

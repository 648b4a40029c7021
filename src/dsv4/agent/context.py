"""Keeping a long run inside the model's context.

Each call's usage says how many tokens its prompt took; with the characters that prompt held, that calibrates an
estimate of the conversation's size in tokens. When the estimate reaches `compact_at` of the context, the oldest
tool outputs outside the last `keep_recent` steps (then the oldest reasoning) are replaced by a one-line stub until
the estimate is back under `compact_to`. Nothing is lost: the trajectory keeps every elided text (`elided`).
Compaction changes earlier text, so the server's prefix cache restarts from there once; it is rare by design.
"""

from .messages import Message
from .trajectory import Elided, Trajectory


def chars(messages: list[Message]) -> int:
    return sum(len(m.content or "") + len(m.reasoning_content or "") +
               sum(len(c.function.arguments) + len(c.function.name) for c in m.tool_calls or []) for m in messages)


def estimate_tokens(trajectory: Trajectory) -> int | None:
    """The conversation's size in tokens, from the last call's prompt tokens per character; None before one."""
    step = next((s for s in reversed(trajectory.steps) if s.prompt_chars and s.usage.get("prompt_tokens")), None)
    if step is None:
        return None
    return round(step.usage["prompt_tokens"] / step.prompt_chars * chars(trajectory.messages))


def stub(text: str) -> str:
    first = text.strip().splitlines()[0][:80] if text.strip() else ""
    return f"[elided to save context: {len(text)} characters; it began: {first!r}]"


def compact(trajectory: Trajectory, target_tokens: int, keep_recent: int) -> int:
    """Elides the oldest tool outputs, then the oldest reasoning, outside the last `keep_recent` steps, until the
    estimate is at most `target_tokens`; returns how many texts were elided."""
    estimate = estimate_tokens(trajectory)
    if estimate is None or estimate <= target_tokens:
        return 0
    per_char = estimate / max(1, chars(trajectory.messages))
    assistants = [i for i, m in enumerate(trajectory.messages) if m.role == "assistant"]
    protected = assistants[-keep_recent] if len(assistants) >= keep_recent else 0  # messages from here are kept
    candidates = [(i, "content") for i, m in enumerate(trajectory.messages[:protected]) if m.role == "tool"] + \
        [(i, "reasoning_content") for i, m in enumerate(trajectory.messages[:protected]) if m.role == "assistant"]
    n = 0
    for i, name in candidates:
        if estimate <= target_tokens:
            break
        message = trajectory.messages[i]
        text = getattr(message, name) or ""
        short = stub(text)
        if len(text) <= len(short) or text.startswith("[elided to save context:"):
            continue
        trajectory.elided.append(Elided(message=i, field=name, text=text))
        trajectory.messages[i] = message.model_copy(update={name: short})
        estimate -= round((len(text) - len(short)) * per_char)
        n += 1
    return n

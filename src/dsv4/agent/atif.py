"""A trajectory in Harbor's Agent Trajectory Interchange Format (ATIF, `harbor.models.trajectories.Trajectory`),
which Harbor's viewer shows and its tools read from a trial's `agent/trajectory.json`.

Steps number from 1: the system prompt, the task, then one agent step per model call (its reply, reasoning, tool
calls, their results as the observation, and the call's token usage). Texts elided to keep the run in context are
given back in full (the trajectory keeps them in `elided`).
"""

import json

from .trajectory import Trajectory

SCHEMA_VERSION = "ATIF-v1.8"  # harbor 0.25's


def _arguments(text: str) -> dict:
    """A call's arguments as the object ATIF wants; text that is not one (the model's mistake) kept under `_raw`."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def to_atif(trajectory: Trajectory, agent: str, version: str, session_id: str | None = None) -> dict:
    messages = [m.model_copy() for m in trajectory.messages]
    for e in trajectory.elided:
        messages[e.message] = messages[e.message].model_copy(update={e.field: e.text})
    records = [*trajectory.steps, *([trajectory.partial] if trajectory.partial is not None else [])]
    steps: list[dict] = []
    calls = 0
    for m in messages:
        if m.role in ("system", "user"):
            steps.append({"step_id": len(steps) + 1, "source": m.role, "message": m.content or ""})
        elif m.role == "assistant":
            step = {"step_id": len(steps) + 1, "source": "agent", "model_name": trajectory.model,
                    "message": m.content or ""}
            if m.reasoning_content:
                step["reasoning_content"] = m.reasoning_content
            if m.tool_calls:
                step["tool_calls"] = [{"tool_call_id": c.id, "function_name": c.function.name,
                                       "arguments": _arguments(c.function.arguments)} for c in m.tool_calls]
            if calls < len(records) and records[calls].usage:
                usage = records[calls].usage
                step["metrics"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens") if k in usage}
            calls += 1
            steps.append(step)
        elif steps and steps[-1]["source"] == "agent":  # a tool result: the observation of the call's step
            observation = steps[-1].setdefault("observation", {"results": []})
            observation["results"].append({"source_call_id": m.tool_call_id, "content": m.content or ""})
    out = {"schema_version": SCHEMA_VERSION,
           "agent": {"name": agent, "version": version, "model_name": trajectory.model},
           "steps": steps,
           "final_metrics": {"total_prompt_tokens": sum(s.usage.get("prompt_tokens", 0) for s in records),
                             "total_completion_tokens": sum(s.usage.get("completion_tokens", 0) for s in records),
                             "total_steps": len(steps)},
           "extra": {"status": trajectory.status, "error": trajectory.error}}
    if session_id is not None:
        out["session_id"] = session_id
    return out

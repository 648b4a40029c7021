"""Conversations in the shapes only the preview encoder accepts: developer turns, tasks, context splits."""

from hypothesis import strategies as st

from .conversations import assistant_turn, texts, tool_defs

TASKS = ["action", "query", "authority", "domain", "read_url"]


@st.composite
def preview_conversations(draw) -> dict:
    msgs: list[dict] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(texts)})
        if draw(st.booleans()):
            msgs[0]["tools"] = draw(tool_defs())
    n_call = 0
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["user", "user", "user", "developer", "reminder", "system"]))
        if kind == "developer":
            dev = {"role": "developer", "content": draw(texts.filter(bool))}
            if draw(st.integers(0, 3)) == 0:
                dev["tools"] = draw(tool_defs())
            msgs.append(dev)
        elif kind == "reminder":
            msgs.append({"role": "latest_reminder", "content": draw(texts)})
        elif kind == "system":
            msgs.append({"role": "system", "content": draw(texts)})
        user = {"role": "user", "content": draw(texts)}
        if draw(st.integers(0, 8)) == 0:
            user["task"] = draw(st.sampled_from(TASKS))
        msgs.append(user)
        for _ in range(draw(st.integers(0, 3))):
            a, results = assistant_turn(draw, n_call, title_tasks=True)
            n_call += len(results)
            msgs += [a, *results]
            if not results:
                break
    if msgs[-1]["role"] == "assistant" and draw(st.integers(0, 4)) == 0:
        msgs[-1]["wo_eos"] = True
    split = draw(st.integers(0, len(msgs) - 1))
    return {
        "context": msgs[:split],
        "messages": msgs[split:],
        "thinking_mode": draw(st.sampled_from(["thinking", "chat"])),
        "reasoning_effort": draw(st.sampled_from([None, "high", "max"])),
        "drop_thinking": draw(st.sampled_from([True, True, False])),
    }

"""Reasoning retention: the reasoning of each assistant turn this server produced, by its tool-call ids, put back
into a later request that replays the turn without it.

V4 renders every earlier turn's reasoning when tools are declared, and DeepSeek's API refuses a tool-call turn
replayed without it; many SDKs drop `reasoning_content` (or Anthropic `thinking` blocks) all the same. Without
it the prompt is not the one the model was trained on, nor the bytes the prefix cache holds. Tool-call ids are
fresh random ids (`call_<24 hex>`), so they name one turn of one conversation: what a client gets back is the
reasoning of its own turn, never another's.

A turn without tool calls (an answer: V4 renders its reasoning too whenever tools are declared) is keyed by a
hash of the conversation before it and its content instead: the same conversation replayed, reasoning aside,
gets it back; one edited or re-serialized anywhere before the turn simply does not.

In memory the store is a bounded LRU (turns and characters); with a path it is also an SQLite file, so a
restarted server still restores the conversations it served before (the file keeps the newest `max_turns` call ids).
"""

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

DEFAULT_MAX_TURNS = 65536
DEFAULT_MAX_CHARS = 256 << 20  # reasoning characters held in memory at most (~0.5-1 GB at worst)


class ReasoningStore:
    def __init__(self, path: str | Path | None = None, *, max_turns: int = DEFAULT_MAX_TURNS,
                 max_chars: int = DEFAULT_MAX_CHARS):
        if max_turns < 1 or max_chars < 1:
            raise ValueError(f"max_turns and max_chars must be >= 1; got {max_turns}, {max_chars}")
        self.max_turns, self.max_chars = max_turns, max_chars
        self._turns: OrderedDict[str, tuple[list[str], str]] = OrderedDict()  # first call id -> (ids, reasoning)
        self._ids: dict[str, str] = {}  # every call id -> its turn's first id
        self._chars = 0
        self._lock = threading.Lock()  # prepare() runs in worker threads, recording on the event loop
        self._db = _open(Path(path)) if path is not None else None

    def record(self, call_ids: list[str], reasoning: str | None) -> None:
        """Keeps `reasoning` for the turn whose tool calls have `call_ids` (nothing for a turn without calls)."""
        if not call_ids or reasoning is None or len(reasoning) > self.max_chars:
            return
        with self._lock:
            self._put(call_ids, reasoning)
            if self._db is not None:
                self._db.executemany("INSERT OR REPLACE INTO reasoning (call_id, turn, reasoning) VALUES (?, ?, ?)",
                                     [(i, call_ids[0], reasoning) for i in call_ids])
                self._db.execute("DELETE FROM reasoning WHERE rowid <= (SELECT MAX(rowid) FROM reasoning) - ?",
                                 (self.max_turns,))
                self._db.commit()

    def lookup(self, call_ids: list[str]) -> str | None:
        """The reasoning recorded for a turn with any of `call_ids`, or None."""
        with self._lock:
            for i in call_ids:
                turn = self._ids.get(i)
                if turn is not None:
                    self._turns.move_to_end(turn)
                    return self._turns[turn][1]
            if self._db is None:
                return None
            for i in call_ids:
                row = self._db.execute("SELECT turn, reasoning FROM reasoning WHERE call_id = ?", (i,)).fetchone()
                if row is not None:
                    ids = [r[0] for r in self._db.execute("SELECT call_id FROM reasoning WHERE turn = ?", (row[0],))]
                    self._put(ids, row[1])
                    return row[1]
        return None

    def restore(self, messages: list) -> tuple[list, int]:
        """`messages` with the recorded reasoning put back into each assistant turn that has none; and how many
        turns got some back. The list and its messages are copied where changed, never mutated."""
        out, restored, history = list(messages), 0, Conversation()
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and m.get("role") == "assistant" and not m.get("reasoning_content")):
                history.add(m)
                continue
            ids = [c["id"] for c in m.get("tool_calls") or () if isinstance(c, dict) and isinstance(c.get("id"), str)]
            reasoning = self.lookup(ids or [history.answer_key(m.get("content"))])
            history.add(m)
            if reasoning:
                out[i] = {**m, "reasoning_content": reasoning}
                restored += 1
        return out, restored

    def _put(self, call_ids: list[str], reasoning: str) -> None:
        turn = call_ids[0]
        self._drop(turn)
        self._turns[turn] = (list(call_ids), reasoning)
        self._chars += len(reasoning)
        for i in call_ids:
            self._ids[i] = turn
        while len(self._turns) > self.max_turns or self._chars > self.max_chars:
            self._drop(next(iter(self._turns)))

    def _drop(self, turn: str) -> None:
        entry = self._turns.pop(turn, None)
        if entry is None:
            return
        ids, reasoning = entry
        self._chars -= len(reasoning)
        for i in ids:
            if self._ids.get(i) == turn:
                del self._ids[i]

    def __len__(self) -> int:
        return len(self._turns)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class Conversation:
    """A running hash of a conversation's messages, reasoning left out, for keying the answers that follow it."""

    def __init__(self, messages=()):
        self._hash = hashlib.sha256()
        # hashed when a key is first asked for, not before: most requests never ask (their turns have tool-call
        # ids, or they are refused), and serializing a 5 MB message held the GIL ~100 ms, stalling other requests
        self._pending = list(messages)

    def add(self, message) -> None:
        self._pending.append(message)

    def answer_key(self, content) -> str:
        """The key of an answer `content` (a reply without tool calls) that follows the conversation so far."""
        for message in self._pending:
            if isinstance(message, dict):
                message = {k: v for k, v in message.items() if k != "reasoning_content" and v is not None}
            self._hash.update(json.dumps(message, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n")
        self._pending = []
        h = self._hash.copy()
        h.update(b"answer:" + json.dumps(content or "", ensure_ascii=False).encode())
        return "answer_" + h.hexdigest()


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)  # guarded by the store's lock
    db.execute("CREATE TABLE IF NOT EXISTS reasoning (call_id TEXT PRIMARY KEY, turn TEXT NOT NULL, "
               "reasoning TEXT NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS reasoning_turn ON reasoning (turn)")
    db.commit()
    return db

"""The conversations behind stored responses, for `previous_response_id`: bounded, in memory, least recently used
out first.

Each entry is the whole conversation in the chat form up to and with that response (not the instructions, which
a Responses request does not inherit). A continued conversation shares its message objects with the entry it came
from, yet each entry is charged its whole conversation's characters: the budget bounds what the store can hold
even when the entries that shared those messages are gone.
"""

import threading
from collections import OrderedDict


def _chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k) + _chars(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_chars(v) for v in value)
    return 8


class ResponseStore:
    def __init__(self, max_responses: int = 1024, max_chars: int = 64 << 20):
        self.max_responses, self.max_chars = max_responses, max_chars
        self._entries: OrderedDict[str, tuple[tuple[dict, ...], int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()  # requests are prepared on worker threads

    def put(self, response_id: str, messages: list[dict]) -> None:
        """Keeps `messages` under `response_id` (a conversation over the budget alone is not kept)."""
        size = _chars(messages)
        if size > self.max_chars:
            return
        with self._lock:
            self._entries[response_id] = (tuple(messages), size)
            self._chars += size
            while len(self._entries) > self.max_responses or self._chars > self.max_chars:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._chars -= dropped

    def get(self, response_id: str) -> list[dict] | None:
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is None:
                return None
            self._entries.move_to_end(response_id)
            return list(entry[0])

    def __len__(self) -> int:
        return len(self._entries)

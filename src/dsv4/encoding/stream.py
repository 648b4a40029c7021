"""Streaming V4 completion parsing: deltas of completion text in, events out.

`StreamParser` runs the same state machine as `parse_completion(strict=False)`, so folding its events
(`fold_events`) gives the same message for every chunking of the same text. It holds back only text that
could still become a marker (at most one marker's length), and each `feed` costs time linear in the delta.
"""

from dsv4.encoding.events import Event
from dsv4.encoding.machine import CompletionMachine


class StreamParser:
    """Incremental parser of one completion; `thinking_mode` and `tools` as for `parse_completion`."""

    def __init__(self, thinking_mode: str = "thinking", tools=None):
        self.thinking_mode = thinking_mode
        self._machine = CompletionMachine(thinking_mode, tools)

    def feed(self, delta: str) -> list[Event]:
        """Events for everything in `delta` that can no longer be the start of a marker."""
        return self._machine.feed(delta)

    def finish(self) -> list[Event]:
        """Flush held-back text and close whatever the completion left open (with warnings)."""
        return self._machine.finish()

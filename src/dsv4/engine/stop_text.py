"""`StopText`: a text that grows by chunks, is handed out as it grows, and ends before the first stop string.

Stop strings are looked for only where a new one can end: in the chunk and the `longest stop - 1` characters
before it. No chunk copies the text so far: the chunks are kept in a list, and `take` hands out only what was added
since the last take, holding back a tail that could still grow into a stop string (and a trailing U+FFFD, which a
source that streams bytes may complete), so what was handed out is never taken back. The engine's detokenizer
feeds it decoded tokens; a backend that streams text (an upstream server) feeds it the text as it comes.
"""

from collections.abc import Iterable


class StopText:
    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = stops
        self.longest = max(map(len, stops), default=0)
        self.pieces: list[str] = []  # the text, chunk by chunk (joined only when asked: `text`)
        self.length = 0  # characters in the text
        self.tail = ""  # its last `longest - 1` characters: where a stop string split across chunks starts
        self.pending = ""  # the text not handed out yet (it ends with the held-back tail)
        self.num_taken = 0  # characters handed out
        self.stop: str | None = None  # the stop string found
        self.ended = False

    def add(self, chunk: str, earlier: Iterable[str] = ()) -> int:
        """Appends a chunk; returns where the first stop string starts in `text`, or -1. `earlier`: what the
        chunk's beginning read as before it was complete (see `Detokenizer`), searched first, in order."""
        if not chunk:
            return -1
        # no stop string lies wholly in the old text (it would have been found then), so a new one ends in chunk
        tail, base = self.tail, self.length - len(self.tail)
        window = tail + chunk
        self.pieces.append(chunk)
        self.length += len(chunk)
        self.pending += chunk
        self.tail = window[max(0, len(window) - self.longest + 1):] if self.longest > 1 else ""
        found = next((f for f in (self._find(tail + e) for e in earlier) if f is not None), None) \
            or self._find(window)
        if found is None:
            return -1
        i, self.stop = found
        return base + i

    def _find(self, window: str) -> tuple[int, str] | None:
        """The earliest stop string in window (at a tie, the first listed) and where it starts."""
        found = [(i, s) for s in self.stops if (i := window.find(s)) >= 0]
        return min(found, key=lambda f: f[0]) if found else None

    def take(self) -> str:
        """The text added since the last take, less its longest tail that is a proper prefix of a stop string
        and a trailing U+FFFD (until the text ends): the takes so far are always a prefix of the final text."""
        held = 0 if self.ended else self._held()
        out = self.pending[:len(self.pending) - held]
        self.pending = self.pending[len(out):]
        self.num_taken += len(out)
        return out

    def _held(self) -> int:
        # the held tail lies within `pending`: a tail of the text that is a stop's prefix was already one before
        text = self.pending
        for k in range(min(self.longest - 1, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stops):
                return k
        return 1 if text.endswith("\ufffd") else 0

    def end_at_stop(self, cut: int) -> str:
        """Ends the text before the stop string found at `cut` (it starts in what was never handed out, since a
        stop's beginning is held back); returns that stop string."""
        self.pending, self.ended = self.pending[:cut - self.num_taken], True
        return self.stop

    def end(self, full: str | None = None):
        """Ends the text; `full`: the whole text as its source gives it at the end (a one-shot decode), whose
        rest after what was handed out is still to take. Should it disagree with what was handed out, the
        streamed text stands."""
        if full is not None and full.startswith(self.text[:self.num_taken]):
            self.pending = full[self.num_taken:]
        self.ended = True

    @property
    def text(self) -> str:
        """The whole text so far (joined: O(n), for the end of a request and tests)."""
        return "".join(self.pieces)

"""Spotting special tokens in emitted reasoning or content, also when one is split across deltas.

The reference parser rejects BOS, EOS, `<think>`, `</think>` and `｜DSML｜` inside content or reasoning; the
tolerant parser keeps such text and says so once per token.
"""

import re
from collections import deque


class TokenGuard:
    """Watches one output field (`reasoning` or `content`) for `tokens`."""

    def __init__(self, field: str, tokens: tuple[str, ...]):
        self.field, self.tokens = field, tokens
        self._keep = max(map(len, tokens)) - 1
        self._lead = re.compile("[" + re.escape("".join({t[0] for t in tokens})) + "]")
        self._tail = ""  # the field's last `_keep` characters
        # Recent (offset, text) pieces covering `_tail`: a field's text need not be contiguous in the input.
        self._pieces: deque[tuple[int, str]] = deque()
        self._covered = 0
        self._seen: set[str] = set()

    def check(self, at: int, text: str) -> list[tuple[str, str]]:
        """(warning key, message) for each token first completed by `text`, which starts at offset `at`."""
        if len(self._seen) == len(self.tokens) or not text:
            return []
        window = self._tail + text
        found = []
        if self._lead.search(window):  # cheap rejection: every token starts with one of these characters
            for tok in self.tokens:
                i = window.find(tok) if tok not in self._seen else -1
                if i >= 0:
                    self._seen.add(tok)
                    found.append((self._offset(i, at, len(window) - len(text)), tok))
        self._remember(at, text, window)
        return [(f"token:{self.field}:{tok}", f"special token {tok!r} in {self.field} (at character {off})")
                for off, tok in sorted(found)]

    def _offset(self, i: int, at: int, n_tail: int) -> int:
        """Absolute offset of window position i (the tail's characters come from earlier pieces)."""
        if i >= n_tail:
            return at + i - n_tail
        back = n_tail - i  # characters from the end of the tail
        for start, piece in reversed(self._pieces):
            if back <= len(piece):
                return start + len(piece) - back
            back -= len(piece)
        raise AssertionError("tail not covered by remembered pieces")

    def _remember(self, at: int, text: str, window: str) -> None:
        self._tail = window[-self._keep:]
        self._pieces.append((at, text))
        self._covered += len(text)
        while self._covered - len(self._pieces[0][1]) >= self._keep:
            self._covered -= len(self._pieces.popleft()[1])

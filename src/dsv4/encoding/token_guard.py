"""Spotting special tokens in emitted reasoning or content, also when one is split across deltas.

The reference parser rejects BOS, EOS, `<think>`, `</think>` and `｜DSML｜` inside content or reasoning; the
tolerant parser keeps such text and says so once per token.
"""


class TokenGuard:
    """Watches one output field (`reasoning` or `content`) for `tokens`."""

    def __init__(self, field: str, tokens: tuple[str, ...]):
        self.field, self.tokens = field, tokens
        self._keep = max(map(len, tokens)) - 1
        self._tail = ""
        self._tail_at: list[int] = []  # absolute offset of each tail character
        self._seen: set[str] = set()

    def check(self, at: int, text: str) -> list[tuple[str, str]]:
        """(warning key, message) for each token first completed by `text`, which starts at offset `at`."""
        if len(self._seen) == len(self.tokens):
            return []
        window, n_tail = self._tail + text, len(self._tail)

        def offset(i: int) -> int:
            return self._tail_at[i] if i < n_tail else at + i - n_tail

        found = []
        for tok in self.tokens:
            i = window.find(tok) if tok not in self._seen else -1
            if i >= 0:
                self._seen.add(tok)
                found.append((offset(i) + len(tok), tok, offset(i)))
        keep, n = self._keep, len(text)
        if n >= keep:
            self._tail_at = list(range(at + n - keep, at + n))
        else:
            self._tail_at = self._tail_at[max(0, len(self._tail_at) - (keep - n)) :] + list(range(at, at + n))
        self._tail = window[len(window) - len(self._tail_at) :]
        return [
            (f"token:{self.field}:{tok}", f"special token {tok!r} in {self.field} (at character {off})")
            for _, tok, off in sorted(found)
        ]

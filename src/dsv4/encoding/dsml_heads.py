"""The attribute text of `<｜DSML｜invoke …>` and `<｜DSML｜parameter …>` tags, read as it streams in.

A head is everything after `<｜DSML｜invoke` (up to the next DSML tag) or after `<｜DSML｜parameter` (up to
its `">`). The exact shapes are the reference's (`name="f">\\n`, ` name="k" string="true|false"`); looser
ones are accepted by the tolerant parser with a warning. Only heads up to `LOOSE_LIMIT` characters are
tried against the loose patterns, which keeps a stream of junk linear.
"""

import re

LOOSE_LIMIT = 4096

_INVOKE_EXACT = re.compile(r'\s*name="(.*?)">\n\n?', re.DOTALL)
_INVOKE_LOOSE = re.compile(r'\s*name\s*=\s*"([^"]*)"\s*>?(.*)', re.DOTALL)
_PARAM_LOOSE = re.compile(r'\s*name\s*=\s*"([^"]*)"(?:\s+string\s*=\s*"(true|false)")?\s*', re.IGNORECASE)
_PARAM_SWAPPED = re.compile(r'\s*string\s*=\s*"(true|false)"\s+name\s*=\s*"([^"]*)"\s*', re.IGNORECASE)
_EXACT_START = ' name="'


class Head:
    """One tag head being read; keeps its first and last few characters for O(1) checks at each `">`."""

    def __init__(self, marker: str = "", at: int = 0):
        self.marker, self.at = marker, at  # the `<｜DSML｜…` opener and its offset
        self._parts: list[str] = []
        self._n = 0
        self._start = ""
        self._tail = ""

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._n += len(text)
        if len(self._start) < len(_EXACT_START):
            self._start = (self._start + text)[: len(_EXACT_START)]
        self._tail = (self._tail + text[-24:])[-24:]

    def text(self) -> str:
        return "".join(self._parts)

    def raw(self) -> str:
        """The tag as written, for moving a malformed one into content."""
        return self.marker + self.text()

    def param_tag(self) -> tuple[str, str | None, bool] | None:
        """At a `">`: (name, string flag, exact) if the head so far is a whole parameter tag, else None."""
        for flag in ("true", "false"):
            suffix = f'" string="{flag}'
            if self._start == _EXACT_START and self._tail.endswith(suffix) and self._n > 6 + len(suffix):
                return self.text()[len(_EXACT_START) : -len(suffix)], flag, True
        if self._n > LOOSE_LIMIT:
            return None
        text = self.text() + '"'  # the quote of the `">` that ends the head
        if m := _PARAM_LOOSE.fullmatch(text):
            return m[1], m[2] and m[2].lower(), False
        if m := _PARAM_SWAPPED.fullmatch(text):
            return m[2], m[1].lower(), False
        return None

    def invoke_name(self) -> tuple[str | None, str, bool]:
        """(name or None, leftover text, exact) for a finished invoke head."""
        text = self.text()
        if m := _INVOKE_EXACT.fullmatch(text):
            return m[1], "", True
        if self._n <= LOOSE_LIMIT and (m := _INVOKE_LOOSE.fullmatch(text)):
            return m[1], m[2], False
        return None, text, False

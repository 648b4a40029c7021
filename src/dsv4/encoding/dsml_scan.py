"""Finding V4 completion markers in streamed text, holding back only what could be the start of one.

The tolerant parser recognises each DSML tag in both spellings (fullwidth `｜DSML｜` and ASCII `|DSML|`),
`<think>`, `</think>` and EOS. Which markers count depends on the parser's mode; `MarkerSet` is one mode's
vocabulary: a regex for complete markers and the set of their proper prefixes for the hold-back.
"""

import re
from dataclasses import dataclass
from itertools import product
from typing import NamedTuple

from dsv4.encoding.tokens import EOS, THINK_END, THINK_START

_BARS = ("｜", "|")

# name -> (template with {b} bars, may be preceded by the blank line "\n\n" in reasoning/content)
_DSML_TAGS = {
    "TC_OPEN": "<{b}DSML{b}tool_calls>",
    "TC_CLOSE": "</{b}DSML{b}tool_calls>",
    "INVOKE_OPEN": "<{b}DSML{b}invoke",
    "INVOKE_CLOSE": "</{b}DSML{b}invoke>",
    "PARAM_OPEN": "<{b}DSML{b}parameter",
    "PARAM_CLOSE": "</{b}DSML{b}parameter>",
}
_PLAIN = {"THINK_OPEN": THINK_START, "THINK_CLOSE": THINK_END, "EOS": EOS, "HEAD_END": '">'}


def _spellings(kind: str) -> list[str]:
    if kind in _PLAIN:
        return [_PLAIN[kind]]
    tpl = _DSML_TAGS[kind].replace("{b}", "\0")
    left, mid, right = tpl.split("\0")
    return [f"{left}{b1}{mid}{b2}{right}" for b1, b2 in product(_BARS, _BARS)]


def _pattern(kind: str) -> str:
    if kind in _PLAIN:
        body = re.escape(_PLAIN[kind])
    else:
        body = re.escape(_DSML_TAGS[kind]).replace(re.escape("{b}"), "[｜|]")
    return f"(?P<{kind}>{body})"


@dataclass(frozen=True)
class MarkerSet:
    """The markers one parser mode listens for."""

    regex: re.Pattern
    blank_line: frozenset[str]  # kinds whose marker takes in a blank line "\n\n" right before it
    prefixes: frozenset[str]
    firsts: re.Pattern  # finds a character that can start a marker
    maxlen: int

    @classmethod
    def build(cls, kinds: tuple[str, ...], blank_line: tuple[str, ...] = ()) -> "MarkerSet":
        if not kinds:
            return cls(re.compile(r"(?!)"), frozenset(), frozenset(), re.compile(r"(?!)"), 1)
        # Every marker starts with "<", which keeps the regex search fast; the blank line is added after.
        regex = re.compile("|".join(_pattern(k) for k in kinds))
        full = [s for k in kinds for s in _spellings(k)]
        full += ["\n\n" + s for k in blank_line for s in _spellings(k)]
        prefixes = frozenset(s[:i] for s in full for i in range(1, len(s)))
        firsts = re.compile("[" + re.escape("".join(sorted({p[0] for p in prefixes}))) + "]")
        return cls(regex, frozenset(blank_line), prefixes, firsts, max(map(len, full)))

    def safe_end(self, buf: str, pos: int) -> int:
        """Where the text that cannot belong to a marker ends: the start of the longest partial marker."""
        n = len(buf)
        m = self.firsts.search(buf, max(pos, n - self.maxlen + 1))
        while m:
            if buf[m.start() :] in self.prefixes:
                return m.start()
            m = self.firsts.search(buf, m.start() + 1)
        return n


_TAGS = ("TC_OPEN", "TC_CLOSE", "INVOKE_OPEN", "INVOKE_CLOSE", "PARAM_OPEN", "PARAM_CLOSE", "EOS")
_OPENERS = ("TC_OPEN", "INVOKE_OPEN")

REASONING_MARKERS = MarkerSet.build(("THINK_CLOSE", "THINK_OPEN", *_OPENERS, "EOS"), blank_line=_OPENERS)
CONTENT_MARKERS = MarkerSet.build(("THINK_CLOSE", *_OPENERS, "EOS"), blank_line=_OPENERS)
TOOL_MARKERS = MarkerSet.build(_TAGS)
PARAM_HEAD_MARKERS = MarkerSet.build((*_TAGS, "HEAD_END"))
NO_MARKERS = MarkerSet.build(())


class Piece(NamedTuple):
    """Text up to the next marker (or up to a held-back partial marker, when `kind` is None)."""

    start: int
    text: str
    kind: str | None = None
    marker: str = ""

    @property
    def marker_start(self) -> int:
        return self.start + len(self.text)


class Scanner:
    """A growing buffer read left to right; consumed text is dropped, so each feed costs O(len(delta))."""

    def __init__(self):
        self._buf = ""
        self._pos = 0
        self._base = 0  # absolute offset of _buf[0] in the whole completion

    def feed(self, delta: str) -> None:
        self._base += self._pos
        self._buf = self._buf[self._pos :] + delta
        self._pos = 0

    @property
    def offset(self) -> int:
        """Absolute offset of the first character not yet read."""
        return self._base + self._pos

    def next(self, markers: MarkerSet, final: bool) -> Piece:
        buf, pos = self._buf, self._pos
        m = markers.regex.search(buf, pos)
        if m:
            self._pos, start = m.end(), m.start()
            if m.lastgroup in markers.blank_line and start - 2 >= pos and buf.startswith("\n\n", start - 2):
                start -= 2
            return Piece(self._base + pos, buf[pos:start], m.lastgroup, buf[start : m.end()])
        end = len(buf) if final else markers.safe_end(buf, pos)
        self._pos = end
        return Piece(self._base + pos, buf[pos:end])

"""The tolerant V4 completion parser: one state machine behind `parse_completion(strict=False)` and
`StreamParser`, so the two cannot disagree.

Modes follow the completion: reasoning → content → tool-call block → invoke head → invoke → parameter
head → value, plus `TRAILING` after EOS. Every input character ends up in reasoning, content, a tool
name, a parameter key or value, or is markup: a recognised marker (`<think>`, `</think>`, EOS, a DSML tag
in either spelling with its attributes), the blank line before the block, or whitespace between DSML
tags and right after the block. Anything else inside the block moves to content. Each recovery is one
`ParseWarning` (the first of its kind, with the character offset).
"""

from dsv4.encoding.call_builder import CallBuilder
from dsv4.encoding.dsml_heads import Head
from dsv4.encoding.dsml_scan import (
    CONTENT_MARKERS,
    NO_MARKERS,
    PARAM_HEAD_MARKERS,
    REASONING_MARKERS,
    TOOL_MARKERS,
    Piece,
    Scanner,
)
from dsv4.encoding.events import ContentDelta, Event, ParseWarning, ReasoningDelta
from dsv4.encoding.schema import tool_parameters
from dsv4.encoding.token_guard import TokenGuard
from dsv4.encoding.tokens import BOS, DSML, THINK_START

REASONING, CONTENT, BLOCK, INVOKE_HEAD, INVOKE, PARAM_HEAD, VALUE, TRAILING = (
    "reasoning",
    "content",
    "block",
    "invoke_head",
    "invoke",
    "param_head",
    "value",
    "trailing",
)
_MARKERS = {
    REASONING: REASONING_MARKERS,
    CONTENT: CONTENT_MARKERS,
    BLOCK: TOOL_MARKERS,
    INVOKE_HEAD: TOOL_MARKERS,
    INVOKE: TOOL_MARKERS,
    PARAM_HEAD: PARAM_HEAD_MARKERS,
    VALUE: TOOL_MARKERS,
    TRAILING: NO_MARKERS,
}
# DSML tags that mean nothing where they stand: kept as text (inside the block, that text moves to content).
_STRAY = {BLOCK: {"PARAM_OPEN", "PARAM_CLOSE", "INVOKE_CLOSE", "TC_OPEN"}, INVOKE: {"PARAM_CLOSE", "TC_OPEN"}}
_END = "END"  # the synthetic marker that `finish` dispatches


class CompletionMachine:
    """Feed completion text in any chunks; read back events. See the module docstring for the grammar."""

    def __init__(self, thinking_mode: str = "thinking", tools=None):
        if thinking_mode not in ("thinking", "chat"):
            raise ValueError(f"thinking_mode must be 'thinking' or 'chat', got {thinking_mode!r}")
        self._scan = Scanner()
        self._mode = REASONING if thinking_mode == "thinking" else CONTENT
        self._schemas = tool_parameters(tools) if tools else None
        self._events: list[Event] = []
        self._warned: set[str] = set()
        self._guards = {
            REASONING: TokenGuard("reasoning", (BOS, DSML)),
            CONTENT: TokenGuard("content", (BOS, THINK_START, DSML)),
        }
        self._head = Head()
        self._call: CallBuilder | None = None
        self._n_calls = self._n_blocks = 0
        self._gap: list[str] = []
        self._gap_at, self._gap_expected = 0, False
        self._after_block = False
        self._finished = False

    # ---- driving --------------------------------------------------------------------------------------

    def feed(self, delta: str) -> list[Event]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._scan.feed(delta)
        self._run(final=False)
        return self._take()

    def finish(self) -> list[Event]:
        if not self._finished:
            self._finished = True
            self._run(final=True)
            self._on_marker(Piece(self._scan.offset, "", _END))
        return self._take()

    def _run(self, final: bool) -> None:
        while True:
            piece = self._scan.next(_MARKERS[self._mode], final)
            if piece.text:
                self._on_text(piece.start, piece.text)
            if piece.kind is None:
                return
            self._on_marker(piece)

    def _take(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def _emit(self, ev: Event) -> None:
        self._events.append(ev)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._emit(ParseWarning(message))

    # ---- text -----------------------------------------------------------------------------------------

    def _on_text(self, at: int, text: str) -> None:
        mode = self._mode
        if mode == REASONING:
            self._guard(REASONING, at, text)
            self._emit(ReasoningDelta(text))
        elif mode == CONTENT:
            self._content_text(at, text)
        elif mode == TRAILING:
            self._warn("trailing", f"text after the end-of-sentence token kept in content (at character {at})")
            self._emit(ContentDelta(text))
        elif mode in (BLOCK, INVOKE):
            self._gap.append(text)
        elif mode in (INVOKE_HEAD, PARAM_HEAD):
            self._head.add(text)
        else:
            self._guard(VALUE, at, text)
            self._call.value(text)

    def _content_text(self, at: int, text: str) -> None:
        if self._after_block:
            kept = text.lstrip()
            if len(kept) < len(text):
                self._warn("ws_after", f"whitespace after the tool-call block dropped (at character {at})")
            if not kept:
                return
            at, text, self._after_block = at + len(text) - len(kept), kept, False
            self._warn("after_block", f"text after the tool-call block kept in content (at character {at})")
        self._emit_content(at, text)

    def _emit_content(self, at: int, text: str) -> None:
        self._guard(CONTENT, at, text)
        self._emit(ContentDelta(text))

    def _guard(self, mode: str, at: int, text: str) -> None:
        guard = self._guards[mode]
        for key, message in guard.check(at, text):
            self._warn(key, message)

    # ---- markers --------------------------------------------------------------------------------------

    def _on_marker(self, p: Piece) -> None:
        if "|DSML" in p.marker or "DSML|" in p.marker:
            self._warn("ascii", f"ASCII |DSML| spelling read as ｜DSML｜ (at character {p.marker_start})")
        getattr(self, f"_in_{self._mode}")(p)

    def _redispatch(self, mode: str, p: Piece) -> None:
        self._mode, self._gap, self._gap_expected = mode, [], False
        self._on_marker(p)

    def _in_reasoning(self, p: Piece) -> None:
        at = p.marker_start
        if p.kind == "THINK_CLOSE":
            self._mode = CONTENT
        elif p.kind == "THINK_OPEN":
            self._warn("think_open", f"repeated <think> dropped (at character {at})")
        elif p.kind in ("EOS", _END):
            self._warn("open_reasoning", f"reasoning not closed by </think> (at character {at})")
            self._mode = TRAILING if p.kind == "EOS" else REASONING
        else:
            self._warn("tools_in_reasoning", f"tool calls opened inside reasoning (at character {at})")
            self._open_tools(p)

    def _in_content(self, p: Piece) -> None:
        if p.kind == "THINK_CLOSE":
            self._warn("stray_think_end", f"stray </think> dropped (at character {p.marker_start})")
        elif p.kind == "EOS":
            self._mode = TRAILING
        elif p.kind != _END:
            if not p.marker.startswith("\n\n"):
                self._warn("blank_line", f"no blank line before the tool calls (at character {p.marker_start})")
            self._open_tools(p)

    def _in_trailing(self, p: Piece) -> None:
        pass

    def _open_tools(self, p: Piece) -> None:
        if self._n_blocks:
            self._warn("second_block", f"a second tool-call block (at character {p.marker_start})")
        self._n_blocks += 1
        self._after_block = False
        if p.kind == "TC_OPEN":
            self._enter_gap(BLOCK, p.marker_start + len(p.marker))
        else:
            self._warn("no_block", f"invoke outside a tool-call block (at character {p.marker_start})")
            self._mode, self._head = INVOKE_HEAD, Head(p.marker.lstrip("\n"), p.marker_start)

    # ---- inside the tool-call block -------------------------------------------------------------------

    def _enter_gap(self, mode: str, at: int) -> None:
        self._mode, self._gap, self._gap_at, self._gap_expected = mode, [], at, True

    def _flush_gap(self) -> None:
        text, self._gap = "".join(self._gap), []
        if self._gap_expected and text == "\n" or not (text or self._gap_expected):
            return
        at = self._gap_at
        if not text.strip():
            self._warn("gap", f"expected one newline between DSML tags, got {text[:20]!r} (at character {at})")
            return
        self._warn("junk", f"text inside the tool-call block moved to content (at character {at})")
        self._emit_content(at + len(text) - len(text.lstrip()), text.strip())

    def _in_block(self, p: Piece) -> None:
        if p.kind in _STRAY[BLOCK]:
            self._gap.append(p.marker)
            return
        self._flush_gap()
        if p.kind == "INVOKE_OPEN":
            self._mode, self._head = INVOKE_HEAD, Head(p.marker, p.marker_start)
        elif p.kind == "TC_CLOSE":
            self._mode, self._after_block = CONTENT, True
        else:
            self._warn("open_block", f"tool-call block not closed (at character {p.marker_start})")
            self._mode = TRAILING if p.kind == "EOS" else BLOCK

    def _in_invoke_head(self, p: Piece) -> None:
        name, junk, exact = self._head.invoke_name()
        at = self._head.at
        if name is None:
            self._warn("bad_invoke", f"invoke tag without a name (at character {at})")
            name = ""
        elif not exact:
            self._warn("invoke_tag", f"nonstandard invoke tag read (at character {at})")
        if junk.strip():
            self._emit_content(at, junk.strip())
        schema = self._schemas.get(name) if self._schemas else None
        self._call = CallBuilder(self._n_calls, name, schema, self._emit, self._warn)
        self._n_calls += 1
        self._redispatch(INVOKE, p)

    def _in_invoke(self, p: Piece) -> None:
        if p.kind in _STRAY[INVOKE]:
            self._gap.append(p.marker)
            return
        self._flush_gap()
        if p.kind == "PARAM_OPEN":
            self._mode, self._head = PARAM_HEAD, Head(p.marker, p.marker_start)
            return
        if p.kind != "INVOKE_CLOSE":
            self._warn("open_invoke", f"invoke not closed (at character {p.marker_start})")
        self._call.close()
        self._call = None
        if p.kind == "INVOKE_CLOSE":
            self._enter_gap(BLOCK, p.marker_start + len(p.marker))
        else:
            self._redispatch(BLOCK, p)

    def _in_param_head(self, p: Piece) -> None:
        if p.kind == "HEAD_END":
            tag = self._head.param_tag()
            if tag is None:
                self._head.add(p.marker)
                return
            name, flag, exact = tag
            if not exact:
                self._warn("param_tag", f"nonstandard parameter tag read (at character {self._head.at})")
            self._call.open_param(name, flag)
            self._mode = VALUE
            # The reference ends a value at the first `/｜DSML｜parameter`, `>` or not: one inside a value that
            # this parser kept must be reported, or a silent tolerant parse could disagree with a strict one.
            self._guards[VALUE] = TokenGuard("a parameter value", ("/" + DSML + "parameter",))
            return
        self._warn("bad_param", f"malformed parameter tag moved to content (at character {self._head.at})")
        self._emit_content(self._head.at, self._head.raw())
        self._redispatch(INVOKE, p)

    def _in_value(self, p: Piece) -> None:
        if p.kind != "PARAM_CLOSE":
            self._warn("open_param", f"parameter not closed (at character {p.marker_start})")
        self._call.close_param()
        if p.kind == "PARAM_CLOSE":
            self._enter_gap(INVOKE, p.marker_start + len(p.marker))
        else:
            self._redispatch(INVOKE, p)

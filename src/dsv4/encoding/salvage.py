"""Tool-call salvage: a tool call the model wrote as text in its answer, recovered as a real call.

DeepSeek-V4 sometimes falls out of DSML and writes the call into `content` (finish_reason `stop`, no
`tool_calls`): deepseek-ai/DeepSeek-V3#1244 counts 2 of 19 V4-Pro calls. The shapes reported are
`<tool_call name="...">{json}</tool_call>` (felinics/Memoh#435), DSML with other bars than the fullwidth `｜`
(`<|DSML|...>`, `<‖DSML‖...>`, `<｜｜DSML｜｜...>`, `< | DSML | ...>`: openclaw#85918, GenericAgent#804,
flocks#687), a bare `invoke` without its `tool_calls` block, V3.2's `function_calls` block, and the function name
followed by its JSON arguments, `name({json})`.

A span is salvaged only when it names a declared tool, its arguments validate against that tool's schema, and it
stands on lines of its own outside Markdown code (fenced blocks and inline code spans): a call quoted in a
sentence or shown in a code block is an example, not a call. If any span that names a declared tool fails to
validate, nothing is salvaged (half of what the model meant to do is worse than none), and the reasons come back.

The content itself is never rewritten: a streamed reply has already sent it, and a whole reply must be what the
stream folds to. Each salvaged call carries its span's text and offset instead, so a client can cut it.
"""

import json
import re
from dataclasses import dataclass, field

from .call_builder import new_call_id
from .message import ToolCall
from .schema import ArgumentsError, coerce_value, tool_parameters, validate_arguments

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)")

_TAG = re.compile(r"<tool_call\b(?P<attrs>[^>]*)>(?P<body>.*?)</tool_call\s*>", re.S)
_ATTR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')

# DSML in any bar spelling seen in the wild, or none at all (V3.2's non-DSML form)
_P = r"(?:\s*[|｜‖¦]{1,2}\s*DSML\s*[|｜‖¦]{1,2}\s*)?"
_BLOCK = re.compile(rf"<{_P}(?P<w>tool_calls|function_calls|tool_use|calls)\s*>(?P<body>.*?)</{_P}(?P=w)\s*>", re.S)
_INVOKE = re.compile(rf'<{_P}invoke\s+name="(?P<name>[^"]+)"\s*>(?P<body>.*?)</{_P}invoke\s*>', re.S)
_PARAM = re.compile(rf'<{_P}parameter\s+name="(?P<key>[^"]+)"(?:\s+string="(?P<flag>true|false)")?\s*>'
                    rf"(?P<value>.*?)</{_P}parameter\s*>", re.S)
_BARE = re.compile(r"^[ \t]*(?P<name>[A-Za-z_][\w.\-]*)[ \t]*\((?=[ \t]*\{)", re.M)
_BLANKS = re.compile(r"[ \t]*")
_CLOSE = re.compile(r"[ \t]*\)[ \t]*;?")


@dataclass(frozen=True)
class SalvagedCall:
    """A call recovered from `text`, found at character `offset` of the content, written in `shape`."""

    call: ToolCall
    shape: str  # "tool_call_tag", "dsml", "bare_call"
    text: str
    offset: int

    def warning(self) -> dict:
        return {"type": "tool_call_salvaged", "tool": self.call.name, "id": self.call.id, "shape": self.shape,
                "offset": self.offset, "text": self.text,
                "message": f"a call to {self.call.name!r} written as text in the content ({self.shape}) was "
                           f"returned as a tool call"}


@dataclass(frozen=True)
class Refused:
    """A span that names a declared tool but could not become a call."""

    reason: str
    text: str
    offset: int

    def warning(self) -> dict:
        return {"type": "tool_call_not_salvaged", "offset": self.offset, "text": self.text,
                "message": f"a tool call written as text was left in the content: {self.reason}"}


@dataclass
class Salvage:
    calls: list[SalvagedCall] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def warnings(self) -> list[dict]:
        return [c.warning() for c in self.calls] + [r.warning() for r in self.refused]


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    shape: str
    name: str
    arguments: dict | str | None  # None: the span's arguments could not be read (`problem` says why)
    problem: str | None = None


def salvage_tool_calls(content: str, tools) -> Salvage:
    """The tool calls written as text in `content`, for the declared `tools` (OpenAI tools or function objects)."""
    schemas = tool_parameters(tools)
    if not content or not schemas:
        return Salvage()
    code = _code_regions(content)
    spans = [s for s in _spans(content, schemas) if s.name in schemas
             and _on_own_lines(content, s.start, s.end) and not _overlaps(s, code)]
    out = Salvage()
    for s in _outermost(spans):
        text = content[s.start:s.end]
        try:
            if s.arguments is None:
                raise ArgumentsError(s.problem or "unreadable")
            args = validate_arguments(schemas[s.name], s.arguments)
        except ArgumentsError as e:
            out.refused.append(Refused(f"call to {s.name!r}: {e}", text, s.start))
            continue
        call = ToolCall(new_call_id(), s.name, json.dumps(args, ensure_ascii=False))
        out.calls.append(SalvagedCall(call, s.shape, text, s.start))
    if out.refused:
        out.calls = []
    return out


def _spans(content: str, schemas: dict[str, dict]) -> list[_Span]:
    return [*_tag_spans(content), *_dsml_spans(content, schemas), *_bare_spans(content)]


def _tag_spans(content: str):
    """`<tool_call name="f">{args}</tool_call>`, or Hermes' `<tool_call>{"name": f, "arguments": {...}}</tool_call>`."""
    for m in _TAG.finditer(content):
        attrs = dict(_ATTR.findall(m["attrs"]))
        body = _json(m["body"].strip())
        if "name" in attrs:
            yield _span(m, "tool_call_tag", attrs["name"], body)
        elif isinstance(body, dict) and isinstance(body.get("name"), str):
            args = body.get("arguments", body.get("parameters", {}))
            yield _span(m, "tool_call_tag", body["name"], _json(args) if isinstance(args, str) else args)


def _dsml_spans(content: str, schemas: dict[str, dict]):
    """A DSML block in a spelling the parser does not read (its span covers the block), or a lone invoke."""
    blocks = list(_BLOCK.finditer(content))
    for b in blocks:
        invokes = list(_INVOKE.finditer(b["body"]))
        if len(invokes) == 1:  # one call: the block is its span; several: each invoke is checked on its own
            yield _invoke_span(invokes[0], schemas, start=b.start(), end=b.end())
        elif _on_own_lines(content, b.start(), b.end()):
            offset = b.start("body")
            for m in invokes:
                yield _invoke_span(m, schemas, start=offset + m.start(), end=offset + m.end())
    for m in _INVOKE.finditer(content):
        if not any(b.start() <= m.start() < b.end() for b in blocks):
            yield _invoke_span(m, schemas, start=m.start(), end=m.end())


def _invoke_span(m: re.Match, schemas, *, start: int, end: int) -> _Span:
    schema = schemas.get(m["name"]) or {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    args: dict = {}
    for p in _PARAM.finditer(m["body"]):
        if p["key"] in args:
            return _Span(start, end, "dsml", m["name"], None, f"duplicate parameter {p['key']!r}")
        raw = p["value"]
        args[p["key"]] = raw if p["flag"] == "true" else json.loads(coerce_value(raw, props.get(p["key"]))[0])
    leftover = _PARAM.sub("", m["body"]).strip()
    if leftover:
        return _Span(start, end, "dsml", m["name"], None, f"text that is not a parameter: {leftover[:60]!r}")
    return _Span(start, end, "dsml", m["name"], args)


def _bare_spans(content: str):
    """`name({json})` alone on its line."""
    decoder = json.JSONDecoder()
    for m in _BARE.finditer(content):
        try:
            args, j = decoder.raw_decode(content, _BLANKS.match(content, m.end()).end())
        except json.JSONDecodeError:
            continue
        close = _CLOSE.match(content, j)
        if close is not None:
            yield _Span(m.start("name"), close.end(), "bare_call", m["name"], args)


def _span(m: re.Match, shape: str, name: str, args) -> _Span:
    if isinstance(args, dict):
        return _Span(m.start(), m.end(), shape, name, args)
    return _Span(m.start(), m.end(), shape, name, None, "its arguments are not a JSON object")


def _json(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _code_regions(content: str) -> list[tuple[int, int]]:
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(content)]
    inline = [(m.start(), m.end()) for m in _INLINE_CODE.finditer(content)
              if not any(a <= m.start() < b for a, b in fences)]
    return fences + inline


def _overlaps(s: _Span, regions: list[tuple[int, int]]) -> bool:
    return any(s.start < b and a < s.end for a, b in regions)


def _on_own_lines(content: str, start: int, end: int) -> bool:
    """Nothing but blanks between the span and the line breaks around it: not a quote inside a sentence."""
    before = content[content.rfind("\n", 0, start) + 1:start]
    nl = content.find("\n", end)
    after = content[end:nl if nl >= 0 else len(content)]
    return not before.strip() and not after.strip()


def _outermost(spans: list[_Span]) -> list[_Span]:
    """Spans in order, dropping any inside another (an invoke inside its block); in-block invokes pass as they are."""
    spans = sorted(spans, key=lambda s: (s.start, -s.end))
    out: list[_Span] = []
    for s in spans:
        if out and s.start < out[-1].end:
            continue
        out.append(s)
    return out

"""Hypothesis strategies for V4 completions, and deepseek-recipe's stream parser as an oracle.

Imported by the parse/stream tests; the few tests here check the helpers themselves.
"""

import json

import deepseek_recipe as dr
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv4.encoding.events import fold_events
from dsv4.encoding.stream import StreamParser
from dsv4.encoding.tokens import EOS

from .conversations import JsonText, json_text, number_spellings, numbers

D = "｜DSML｜"
# Text the model may write: quotes, "<", backslashes, newlines, tabs, non-ASCII, astral characters.
RICH = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 _-.,:;!?'\"<>/\\&{}[]()=\n\t\r" + "éßкл中文😀€\u2028"
NAME = "abcdefghijklmnopqrstuvwxyz_0123456789ключ中"
MARKERS = ("<think>", "</think>", "DSML", EOS, "<｜begin▁of▁sentence｜>")


def _clean(s: str) -> bool:
    return not any(m in s for m in MARKERS)


rich_text = st.text(alphabet=RICH, max_size=40).filter(_clean)
names = st.text(alphabet=NAME, min_size=1, max_size=10)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | numbers
    | number_spellings()  # `1E5`, `-0`: both parsers pass a value's text on as written
    | rich_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def tool_calls(draw, max_calls: int = 3) -> list[tuple[str, dict]]:
    """[(name, arguments)] with arguments a dict of unique keys: strings become `string="true"` params."""
    calls = []
    for _ in range(draw(st.integers(0, max_calls))):
        keys = draw(st.lists(names, max_size=4, unique=True))
        calls.append((draw(names), {k: draw(rich_text | json_values) for k in keys}))
    return calls


def render_calls(calls: list[tuple[str, dict]], bar: str = D) -> str:
    """The DSML block as the reference renders it (spec 2.8), blank line included."""

    def param(k, v):
        flag, text = ("true", v) if isinstance(v, str) and not isinstance(v, JsonText) else ("false", json_text(v))
        return f'<{bar}parameter name="{k}" string="{flag}">{text}</{bar}parameter>'

    invokes = [
        f'<{bar}invoke name="{n}">\n' + "\n".join(param(k, v) for k, v in a.items()) + f"\n</{bar}invoke>"
        for n, a in calls
    ]
    return f"\n\n<{bar}tool_calls>\n" + "\n".join(invokes) + f"\n</{bar}tool_calls>"


@st.composite
def completions(draw, thinking_mode: str = "thinking", edge_newlines: bool = True):
    """(text ending with EOS, reasoning or None, content, calls) for a well-formed completion."""

    def text():
        t = draw(rich_text)
        return t if edge_newlines else t.strip("\n\r")

    reasoning = text() if thinking_mode == "thinking" else None
    content, calls = text(), draw(tool_calls())
    body = (reasoning + "</think>" if reasoning is not None else "") + content
    return body + (render_calls(calls) if calls else "") + EOS, reasoning, content, calls


def expected_arguments(args: dict) -> str:
    """What the reference (and the tolerant parser) decode a rendered call's arguments to."""
    parts = [f"{json.dumps(k, ensure_ascii=False)}: {json_text(v)}" for k, v in args.items()]
    return "{" + ", ".join(parts) + "}"


def stream(text: str, cuts=(), **kw):
    """Fold a StreamParser's events for `text` fed in pieces split at the (sorted) `cuts`."""
    parser, events, last = StreamParser(**kw), [], 0
    for c in sorted(set(cuts)) + [len(text)]:
        events += parser.feed(text[last:c])
        last = c
    return fold_events(events + parser.finish(), thinking_mode=kw.get("thinking_mode", "thinking"))


def without_ids(m):
    return (m.content, m.reasoning_content, [(c.name, c.arguments) for c in m.tool_calls], m.warnings)


# ---- deepseek-recipe's StreamProcessor --------------------------------------------------------------------

_TOOLS = [{"type": "function", "function": {"name": "any_tool", "parameters": {"type": "object"}}}]


def recipe_parse(text: str, thinking_mode: str = "thinking", chunks: list[str] | None = None):
    """(reasoning, content, [(name, arguments)]) from deepseek-recipe 0.2.0's stream parser (Chat Completions)."""
    body = {
        "model": "DeepSeek-V4-Pro",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "tools": _TOOLS,
        "thinking": {"type": "enabled" if thinking_mode == "thinking" else "disabled"},
    }
    req = dr.ChatCompletionRequest(body).convert(dr.ConversionOptions())
    proc = dr.StreamProcessor(dr.ChatCompletionRequest.chunk_generator(req, "id", "m"), req.parsing_options)
    out = [c for piece in (chunks or [text]) for c in proc.push(dr.InferenceChunk.text(piece))] + proc.finish()
    reasoning, content, calls = [], [], {}
    for chunk in out:
        for choice in json.loads(chunk.to_json())["choices"]:
            delta = choice["delta"]
            reasoning.append(delta.get("reasoning_content") or "")
            content.append(delta.get("content") or "")
            for tc in delta.get("tool_calls") or []:
                name, args = calls.setdefault(tc["index"], ([], []))
                name.append(tc.get("function", {}).get("name") or "")
                args.append(tc.get("function", {}).get("arguments") or "")
    return "".join(reasoning), "".join(content), [("".join(n), "".join(a)) for n, a in calls.values()]


@settings(max_examples=30, deadline=None)
@given(completions())
def test_rendered_completions_decode_to_their_calls(case):
    text, _, _, calls = case
    assert text.endswith(EOS) and text.count(EOS) == 1
    for _name, args in calls:
        assert json.loads(expected_arguments(args)) == json.loads(json_text(args))


def test_recipe_oracle_reads_a_tool_call():
    text = "R</think>C" + render_calls([("f", {"a": "x", "n": 2})])
    assert recipe_parse(text) == ("R", "C", [("f", '{"a": "x", "n": 2}')])

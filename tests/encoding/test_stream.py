"""StreamParser and the tolerant parser: events, recoveries, chunk invariance, and fuzzing.

"No character dropped" means: every input character is copied to one output field (reasoning, content, a
tool name, a parameter key or value) unless it is markup: a recognised marker (`<think>`, `</think>`, EOS,
a DSML tag in either spelling with its attributes), the blank line before the tool-call block, or
whitespace between DSML tags or right after the block. The fuzz tests check it by drawing all non-markup
text from an alphabet (`PAYLOAD`) that no marker uses, and comparing the multiset of those characters in
the input and in the output.
"""

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv4.encoding.dsml_scan import TOOL_MARKERS
from dsv4.encoding.events import ArgumentsDelta, ContentDelta, ReasoningDelta, ToolCallEnd, ToolCallStart
from dsv4.encoding.parse import parse_completion
from dsv4.encoding.stream import StreamParser
from dsv4.encoding.tokens import EOS
from tests.encoding.test_parse_strategies import (
    D,
    completions,
    expected_arguments,
    render_calls,
    stream,
    without_ids,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAYLOAD = "0123456789#@%&*+;:!?,~^$()[]{}'`你好世界😀éß"
payload = st.text(alphabet=PAYLOAD, max_size=12)
payload_names = st.text(alphabet="0123456789你好世界éß", min_size=1, max_size=6)
FRAGMENTS = [
    "<think>",
    "</think>",
    EOS,
    "\n",
    "\n\n",
    " ",
    '">',
    ' name="',
    '" string="true">',
    '" string="false">',
    '"',
    *(
        f"{o}{b}DSML{b}{t}{c}"
        for b in "｜|"
        for o, t, c in [
            ("<", "tool_calls", ">"),
            ("</", "tool_calls", ">"),
            ("<", "invoke", ""),
            ("</", "invoke", ">"),
            ("<", "parameter", ""),
            ("</", "parameter", ">"),
            ("<", "param", ""),
            ("</", "invo", ""),
        ]
    ),
]


def payload_chars(s: str) -> Counter:
    return Counter(c for c in s if c in PAYLOAD)


def output_chars(m) -> Counter:
    out = payload_chars((m.reasoning_content or "") + m.content)
    for call in m.tool_calls:
        out += payload_chars(call.name)
        for k, v in json.loads(call.arguments, object_pairs_hook=list):
            out += payload_chars(k + (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
    return out


@st.composite
def payload_completion(draw):
    calls = [
        (draw(payload_names), {draw(payload_names): draw(payload) for _ in range(draw(st.integers(0, 3)))})
        for _ in range(draw(st.integers(0, 2)))
    ]
    return draw(payload) + "</think>" + draw(payload) + (render_calls(calls) if calls else "") + EOS


@st.composite
def mutated(draw):
    text = draw(payload_completion())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        op = draw(st.sampled_from(["delete", "duplicate", "insert", "ascii", "truncate"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(FRAGMENTS) | payload) + text[i:]
        elif op == "ascii":
            text = text[:i] + text[i:].replace("｜", "|", 2)
        else:
            text = text[:j]
    return text


fuzz_text = st.lists(st.sampled_from(FRAGMENTS) | payload, max_size=30).map("".join)
cuts = st.lists(st.integers(0, 400), max_size=12)


# ---- events ---------------------------------------------------------------------------------------------


def test_events_of_a_tool_call_stream():
    text = "Plan.</think>Checking." + render_calls([("get_weather", {"location": 'Pa"ris', "days": 3})]) + EOS
    parser = StreamParser()
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    kinds = [type(e) for e in events]
    assert kinds.index(ToolCallStart) < kinds.index(ArgumentsDelta) and kinds[-1] is ToolCallEnd
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Plan."
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "Checking."
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert (start.index, start.name) == (0, "get_weather") and start.id.startswith("call_")
    args = "".join(e.text for e in events if isinstance(e, ArgumentsDelta))
    assert args == '{"location": "Pa\\"ris", "days": 3}'
    # The string value streams: its characters arrive before the parameter closes.
    assert sum(isinstance(e, ArgumentsDelta) for e in events) > 5


def test_holds_back_only_a_possible_marker():
    parser = StreamParser()
    assert parser.feed("abc</thi") == [ReasoningDelta("abc")]
    assert parser.feed("nk>x<") == [ContentDelta("x")]
    assert parser.feed("y") == [ContentDelta("<y")]
    assert parser.feed("\n") == []  # could begin "\n\n<｜DSML｜tool_calls>"
    assert parser.feed("z") == [ContentDelta("\nz")]
    assert parser.finish() == []


def test_feed_after_finish_raises():
    parser = StreamParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")


def test_buffer_stays_bounded_when_fed_one_char_at_a_time():
    parser = StreamParser()
    text = ("word <b> \n" * 300) + "</think>" + ("x < y\n" * 300)
    for ch in text:
        parser.feed(ch)
        assert len(parser._machine._scan._buf) <= TOOL_MARKERS.maxlen + 2


# ---- recoveries -----------------------------------------------------------------------------------------

CALL = render_calls([("f", {"a": "x"})])
RECOVERIES = {
    # name: (text, thinking_mode, tools, (reasoning, content, [(name, args)]), warning fragment)
    "calls in reasoning": ("R" + CALL + EOS, "thinking", None, ("R", "", [("f", '{"a": "x"}')]), "inside reasoning"),
    "no blank line": ("R</think>C" + CALL[2:], "thinking", None, ("R", "C", [("f", '{"a": "x"}')]), "blank line"),
    "missing closers": (
        "R</think>" + CALL.split(f"</{D}parameter>")[0],
        "thinking",
        None,
        ("R", "", [("f", '{"a": "x"}')]),
        "parameter not closed",
    ),
    "ascii spelling": (
        "</think>" + CALL.replace(D, "|DSML|"),
        "thinking",
        None,
        ("", "", [("f", '{"a": "x"}')]),
        "ASCII",
    ),
    "stray </think>": ("C</think>D", "chat", None, (None, "CD", []), "stray </think>"),
    "repeated <think>": ("<think>R</think>C", "thinking", None, ("R", "C", []), "repeated <think>"),
    "text after block": (
        "</think>" + CALL + "\nmore",
        "thinking",
        None,
        ("", "more", [("f", '{"a": "x"}')]),
        "after the tool-call",
    ),
    "text after EOS": ("R</think>C" + EOS + "more", "thinking", None, ("R", "Cmore", []), "after the end-of-sentence"),
    "invalid JSON": (
        "</think>" + CALL.replace('string="true">x', 'string="false">three'),
        "thinking",
        None,
        ("", "", [("f", '{"a": "three"}')]),
        "kept as a string",
    ),
    "junk in block": (
        "</think>" + CALL.replace("tool_calls>\n", "tool_calls>\nhmm\n", 1),
        "thinking",
        None,
        ("", "hmm", [("f", '{"a": "x"}')]),
        "moved to content",
    ),
    "invoke without block": (
        f'</think>\n\n<{D}invoke name="f">\n</{D}invoke>',
        "thinking",
        None,
        ("", "", [("f", "{}")]),
        "outside a tool-call block",
    ),
    "reasoning never closed": ("R", "thinking", None, ("R", "", []), "not closed by </think>"),
    "nonstandard tag": (
        f'</think>\n\n<{D}tool_calls>\n<{D}invoke name = "f" >\n<{D}parameter string="true" name="a">x</{D}parameter>\n'
        f"</{D}invoke>\n</{D}tool_calls>",
        "thinking",
        None,
        ("", "", [("f", '{"a": "x"}')]),
        "nonstandard",
    ),
}


@pytest.mark.parametrize("name", RECOVERIES)
def test_recoveries(name):
    text, mode, tools, (reasoning, content, calls), warning = RECOVERIES[name]
    m = parse_completion(text, thinking_mode=mode, strict=False, tools=tools)
    assert (m.reasoning_content, m.content, [(c.name, c.arguments) for c in m.tool_calls]) == (
        reasoning,
        content,
        calls,
    )
    assert any(warning in w for w in m.warnings), m.warnings
    assert without_ids(stream(text, range(len(text)), thinking_mode=mode, tools=tools)) == without_ids(m)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}


def _weather(params: str) -> str:
    return f'</think>\n\n<{D}tool_calls>\n<{D}invoke name="get_weather">\n{params}\n</{D}invoke>\n</{D}tool_calls>'


def _p(k: str, flag: str, v: str) -> str:
    return f'<{D}parameter name="{k}" string="{flag}">{v}</{D}parameter>'


@pytest.mark.parametrize(
    "params, arguments, warning",
    [
        (_p("days", "false", '"3"'), '{"days": 3}', "coerced to integer"),
        (_p("days", "false", "3.0"), '{"days": 3.0}', None),
        (_p("city", "false", "42"), '{"city": "42"}', "coerced to string"),
        (_p("city", "false", "Paris"), '{"city": "Paris"}', "coerced to string"),
        (_p("metric", "false", "True"), '{"metric": true}', "coerced to boolean"),
        (_p("tags", "false", "['a', 'b']"), '{"tags": ["a", "b"]}', "coerced to array"),
        (_p("days", "false", "soon"), '{"days": "soon"}', "kept as a string"),
        (_p("arguments", "false", '{"city": "Oslo", "days": 2}'), '{"city": "Oslo", "days": 2}', "unwrapped"),
        (_p("input", "true", '{"city": "Oslo"}'), '{"city": "Oslo"}', "unwrapped"),
        (_p("arguments", "false", '{"town": "Oslo"}'), '{"arguments": {"town": "Oslo"}}', None),
        (
            _p("arguments", "false", '{"city": "Oslo"}') + "\n" + _p("days", "false", "2"),
            '{"arguments": {"city": "Oslo"}, "days": 2}',
            None,
        ),
    ],
)
def test_schema_driven_recoveries(params, arguments, warning):
    text = _weather(params)
    m = parse_completion(text, strict=False, tools=[WEATHER_TOOL])
    assert m.tool_calls[0].arguments == arguments
    assert (warning is None and m.warnings == []) or any(warning in w for w in m.warnings), m.warnings
    assert without_ids(stream(text, range(0, len(text), 3), tools=[WEATHER_TOOL])) == without_ids(m)


def test_without_tools_a_wrapper_stays():
    text = _weather(_p("arguments", "false", '{"city": "Oslo"}'))
    assert parse_completion(text, strict=False).tool_calls[0].arguments == '{"arguments": {"city": "Oslo"}}'


# ---- properties -----------------------------------------------------------------------------------------


@FAST
@given(completions(), cuts)
def test_strict_and_tolerant_agree_on_well_formed_completions(case, cut_points):
    text, reasoning, content, calls = case
    strict = parse_completion(text)
    assert (strict.reasoning_content, strict.content) == (reasoning, content)
    assert [(c.name, c.arguments) for c in strict.tool_calls] == [(n, expected_arguments(a)) for n, a in calls]
    assert without_ids(parse_completion(text, strict=False)) == without_ids(strict)
    assert without_ids(stream(text, cut_points)) == without_ids(strict)


@FAST
@given(completions(thinking_mode="chat"))
def test_chat_mode_agrees(case):
    text, _, content, calls = case
    strict = parse_completion(text, thinking_mode="chat")
    assert strict.content == content and len(strict.tool_calls) == len(calls)
    assert without_ids(parse_completion(text, thinking_mode="chat", strict=False)) == without_ids(strict)


@FAST
@given(st.one_of(fuzz_text, mutated()), cuts, st.sampled_from(["thinking", "chat"]))
def test_fuzz_never_raises_never_drops_and_is_chunk_invariant(text, cut_points, mode):
    whole = parse_completion(text, thinking_mode=mode, strict=False)
    assert output_chars(whole) == payload_chars(text)
    for call in whole.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)
    assert without_ids(stream(text, cut_points, thinking_mode=mode)) == without_ids(whole)
    assert without_ids(stream(text, range(len(text)), thinking_mode=mode)) == without_ids(whole)


@FAST
@given(st.one_of(fuzz_text, mutated()))
def test_no_warnings_means_the_reference_accepts(text):
    """The converse of `test_strict_and_tolerant_agree…`: a silent tolerant parse is a strict one."""
    whole = parse_completion(text, strict=False)
    if whole.warnings:
        return
    full = text if text.endswith(EOS) or whole.tool_calls else text + EOS
    assert without_ids(parse_completion(full)) == without_ids(whole)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(st.one_of(fuzz_text, mutated()), cuts, st.sampled_from(["thinking", "chat"]))
def test_fuzz_many(text, cut_points, mode):
    test_fuzz_never_raises_never_drops_and_is_chunk_invariant.hypothesis.inner_test(text, cut_points, mode)
    test_no_warnings_means_the_reference_accepts.hypothesis.inner_test(text)

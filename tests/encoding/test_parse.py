"""parse_completion: worked examples, and strict acceptance matching DeepSeek's reference parser.

The reference (`parse_message_from_completion_text` in HF `encoding/encoding_dsv4.py`) is not installable;
the expected outcomes below were worked out by hand from reading it (spec 5.1).
"""

import json

import pytest

from dsv4.encoding.errors import DSMLError
from dsv4.encoding.parse import parse_completion
from dsv4.encoding.tokens import BOS, EOS

D = "｜DSML｜"


def block(*invokes: str) -> str:
    return f"\n\n<{D}tool_calls>\n" + "\n".join(invokes) + f"\n</{D}tool_calls>"


def invoke(name: str, *params: tuple[str, str, str]) -> str:
    lines = [f'<{D}parameter name="{k}" string="{s}">{v}</{D}parameter>' for k, s, v in params]
    return f'<{D}invoke name="{name}">\n' + "\n".join(lines) + f"\n</{D}invoke>"


WEATHER = block(invoke("get_weather", ("location", "true", 'Pa"ris <b>\n'), ("days", "false", "3")))


def both(text: str, **kw):
    """Strict and tolerant parses of a well-formed text: identical, and the tolerant one has no warnings."""
    strict = parse_completion(text, **kw)
    loose = parse_completion(text, strict=False, **kw)
    for a, b in zip(strict.tool_calls, loose.tool_calls, strict=True):
        b.id = a.id
    assert loose == strict
    return strict


# ---- worked examples (spec 2.8, 4.2, 5.2) ---------------------------------------------------------------


def test_thinking_answer():
    m = both("The user asks about the capital of France. It is Paris.</think>The capital of France is Paris." + EOS)
    assert m.reasoning_content == "The user asks about the capital of France. It is Paris."
    assert m.content == "The capital of France is Paris."
    assert m.tool_calls == [] and m.warnings == []


def test_chat_answer():
    m = both("Hi there! How can I help you?" + EOS, thinking_mode="chat")
    assert m.reasoning_content is None and m.content == "Hi there! How can I help you?"


def test_tool_calls_decode_like_the_reference():
    m = both("Need the weather.</think>Let me check." + WEATHER + EOS)
    assert m.content == "Let me check."
    (call,) = m.tool_calls
    assert call.name == "get_weather"
    assert call.arguments == '{"location": "Pa\\"ris <b>\\n", "days": 3}'
    assert json.loads(call.arguments) == {"location": 'Pa"ris <b>\n', "days": 3}
    assert call.id.startswith("call_") and len(call.id) == 5 + 24 and int(call.id[5:], 16) >= 0


def test_parallel_calls_json_values_and_empty_invoke():
    text = (
        "</think>"
        + block(
            invoke("a", ("q", "true", "ключ 😀"), ("obj", "false", '{"k": [1, 2]}')),
            f'<{D}invoke name="b">\n\n</{D}invoke>',
            invoke("c", ("n", "false", "null")),
        )
        + EOS
    )
    m = both(text)
    assert [c.name for c in m.tool_calls] == ["a", "b", "c"]
    assert [c.arguments for c in m.tool_calls] == ['{"q": "ключ 😀", "obj": {"k": [1, 2]}}', "{}", '{"n": null}']
    assert len({c.id for c in m.tool_calls}) == 3


def test_tool_block_without_eos_and_empty_block():
    assert both("R</think>" + WEATHER).tool_calls[0].name == "get_weather"
    assert both(f"R</think>C\n\n<{D}tool_calls>\n</{D}tool_calls>" + EOS).tool_calls == []


def test_string_false_values_are_pasted_unchecked_by_strict():
    text = "</think>" + block(invoke("f", ("days", "false", "three"))) + EOS
    assert parse_completion(text).tool_calls[0].arguments == '{"days": three}'
    loose = parse_completion(text, strict=False)
    assert loose.tool_calls[0].arguments == '{"days": "three"}'
    assert loose.warnings == ["parameter 'days' of 'f': not valid JSON; kept as a string"]


# ---- strict: what the reference rejects ---------------------------------------------------------------

REJECTED = {
    "no </think>": "just reasoning" + EOS,
    "tool calls inside reasoning": "R" + WEATHER + EOS,
    "no EOS": "R</think>C",
    "text after EOS": "R</think>C" + EOS + "more",
    "no blank line before block": "R</think>C" + WEATHER[2:] + EOS,
    "one newline before block": "R</think>C" + WEATHER[1:] + EOS,
    "text after block": "R</think>" + WEATHER + "\n" + EOS,
    "<think> in reasoning": "<think>R</think>C" + EOS,
    "</think> in content": "R</think>C</think>" + EOS,
    "BOS in content": "R</think>" + BOS + EOS,
    "DSML in content": f"R</think>see <{D}foo>" + EOS,
    "no newline after block opener": "R</think>" + WEATHER.replace("tool_calls>\n", "tool_calls>", 1) + EOS,
    "two newlines between params": "R</think>" + WEATHER.replace(f"parameter>\n<{D}", f"parameter>\n\n<{D}") + EOS,
    "space in invoke tag": "R</think>" + WEATHER.replace('"get_weather">', '"get_weather" >') + EOS,
    "bad string flag": "R</think>" + block(invoke("f", ("a", "yes", "1"))) + EOS,
    "duplicate parameter": "R</think>" + block(invoke("f", ("a", "true", "1"), ("a", "true", "2"))) + EOS,
    "missing invoke closer": "R</think>" + WEATHER.replace(f"</{D}invoke>\n", "") + EOS,
    "unclosed parameter": "R</think>" + WEATHER.split(f"</{D}parameter>")[0],
    "block ends with closer but no >": "R</think>" + WEATHER[: -len(">")] + EOS,
}


@pytest.mark.parametrize("name", REJECTED)
def test_strict_rejects_what_the_reference_rejects(name):
    text = REJECTED[name]
    with pytest.raises(DSMLError) as err:
        parse_completion(text)
    assert 0 <= err.value.offset <= len(text)
    assert f"(at character {err.value.offset})" in str(err.value)
    # The tolerant parser reads every one of them, saying what it recovered from (a missing EOS is how
    # streams end, so it alone goes unremarked).
    assert parse_completion(text, strict=False).warnings or name == "no EOS"


def test_strict_error_offsets():
    with pytest.raises(DSMLError) as err:
        parse_completion("R</think>C" + EOS + "more")
    assert err.value.offset == len("R</think>C" + EOS)
    with pytest.raises(DSMLError) as err:
        parse_completion("R</think>ab<think>c" + EOS)
    assert err.value.offset == len("R</think>ab")


# ---- strict: the reference's quirks, accepted the same way ------------------------------------------------

ACCEPTED = {
    # The text may stop right after a parameter's closing newline, or right after an invoke head.
    "stops after a parameter": (
        "R</think>" + WEATHER.split(f"</{D}invoke>")[0],
        '{"location": "Pa\\"ris <b>\\n", "days": 3}',
    ),
    "stops after the invoke head": (f'R</think>\n\n<{D}tool_calls>\n<{D}invoke name="f">\n', "{}"),
    "stops after </invoke without >": (f'R</think>\n\n<{D}tool_calls>\n<{D}invoke name="f">\n</{D}invoke', "{}"),
    # A newline between the value's "<" and "/｜DSML｜parameter" is swallowed by the reference's `$`.
    "value ends in <newline/": (
        f'R</think>\n\n<{D}tool_calls>\n<{D}invoke name="f">\n<{D}parameter name="a" string="true">x<\n'
        f"/{D}parameter>\n</{D}invoke>\n</{D}tool_calls>",
        '{"a": "x"}',
    ),
    # Names are read lazily up to the first `" string="…">`, values up to the first closer.
    "odd name": (
        "R</think>" + block(invoke('a" b', ("k", "true", f"<{D}invoke> inside"))) + EOS,
        f'{{"k": "<{D}invoke> inside"}}',
    ),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_strict_accepts_the_reference_quirks(name):
    text, arguments = ACCEPTED[name]
    (call,) = parse_completion(text).tool_calls
    assert call.arguments == arguments


def test_ascii_spelling_is_content_to_strict_and_a_call_to_tolerant():
    text = "R</think>C" + WEATHER.replace(D, "|DSML|") + EOS
    assert parse_completion(text).content == "C" + WEATHER.replace(D, "|DSML|")
    loose = parse_completion(text, strict=False)
    assert loose.content == "C" and loose.tool_calls[0].name == "get_weather"
    assert loose.warnings == ["ASCII |DSML| spelling read as ｜DSML｜ (at character 10)"]


def test_strict_block_lead_without_anything_after():
    m = parse_completion(f"R</think>C\n\n<{D}tool_calls")
    assert m.content == "C" and m.tool_calls == []


def test_bad_thinking_mode():
    with pytest.raises(ValueError, match="thinking_mode"):
        parse_completion("x" + EOS, thinking_mode="think")
    with pytest.raises(ValueError, match="thinking_mode"):
        parse_completion("x" + EOS, thinking_mode="think", strict=False)

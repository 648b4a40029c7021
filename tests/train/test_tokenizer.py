import pytest

from dsv4.encoding import tokens
from dsv4.train.tokenizer import SPECIAL_TOKENS, train_tokenizer

CORPUS = ["The pass key is 71432. Remember it.", "<｜User｜>read data/x.txt<｜Assistant｜><think>ok</think>",
          "exit code: 0\nstdout:\nalpha.cfg\n"] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400, spelled=["alpha"])


def test_special_tokens_are_single_ids_and_bos_eos_first(tok):
    assert tok.token_to_id(tokens.BOS) == 0 and tok.token_to_id(tokens.EOS) == 1
    for t in SPECIAL_TOKENS:
        assert tok.encode(f"x{t}y", add_special_tokens=False).ids.count(tok.token_to_id(t)) == 1
    ids = tok.encode(f"<{tokens.DSML}invoke name=\"bash\">", add_special_tokens=False).ids
    assert tok.token_to_id(tokens.DSML) in ids


@pytest.mark.parametrize("text", ["unseen wörds ✓ 漢字 \t\n  end", "12345678", tokens.THINK_END + "\n\n<｜DSML｜x>"])
def test_any_text_round_trips(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_digits_are_one_token_each(tok):
    assert tok.encode("71432", add_special_tokens=False).tokens == list("71432")


def test_too_small_vocabulary():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_frequent_words_are_one_id_names_and_unseen_words_are_spelled(tok):
    # a name (kept out of the vocabulary) and a word never seen are spelled the same way: letter by letter
    assert tok.encode("The pass key", add_special_tokens=False).tokens == ["The", "Ġpass", "Ġkey"]
    assert tok.encode("alpha.cfg", add_special_tokens=False).tokens == ["a", "l", "p", "h", "a", ".", "cfg"]
    assert tok.encode("read data/zyx", add_special_tokens=False).tokens == ["read", "Ġdata", "/", "z", "y", "x"]


def test_vocabulary_is_capped_most_frequent_first():
    small = train_tokenizer(["a b b c c c"] * 2 + ["d"], vocab_size=len(SPECIAL_TOKENS) + 256 + 1)
    assert small.get_vocab_size() == len(SPECIAL_TOKENS) + 256 + 1
    assert small.token_to_id("Ġc") is not None and small.token_to_id("Ġb") is None

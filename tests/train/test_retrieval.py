import random

import pytest

from dsv4.train.retrieval import PASSKEY_QUESTION, key_values, passkey


def count(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_sits_at_its_depth(depth):
    n = passkey(random.Random(0), 2000, depth, count)
    content = n.request["messages"][0]["content"]
    assert content.endswith(PASSKEY_QUESTION)
    at = content.index(f"The pass key is {n.value}.") / len(content)
    assert abs(at - depth) < 0.05
    assert n.request["messages"][1]["content"] == f"The pass key is {n.value}."
    assert 1900 < count(content) + count(n.request["messages"][1]["content"]) <= 2000


def test_key_values_asks_one_of_several_needles():
    n = key_values(random.Random(1), 1000, 0.3, count)
    content = n.request["messages"][0]["content"]
    assert content.count("The value of ") >= 2 and f" is {n.value}." in content
    assert n.request["messages"][1]["content"].endswith(f" is {n.value}.")
    assert n.request["thinking"] == {"type": "disabled"}


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be in"):
        passkey(random.Random(0), 500, 1.5, count)


def test_copy_turns_repeat_training_pool_text_verbatim():
    from dsv4.train.retrieval import copy_request
    from dsv4.train.words import NOUNS, split

    held_out = set(split(NOUNS, True))
    for seed in range(20):
        r = copy_request(random.Random(seed))
        asked, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert asked.endswith(": " + answer) and answer
        assert not held_out & set(answer.replace("/", " ").replace(".", " ").split())

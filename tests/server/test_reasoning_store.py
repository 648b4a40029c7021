"""`ReasoningStore`: a turn's reasoning by any of its tool-call ids, put back only where a replayed tool-call turn
has none; bounded by turns and characters (oldest out first); an SQLite file survives a new store."""

import pytest

from dsv4.server.reasoning_store import Conversation, ReasoningStore


def turn(*ids: str, reasoning: str | None = None) -> dict:
    m = {"role": "assistant", "content": "", "tool_calls": [{"id": i, "type": "function",
                                                            "function": {"name": "f", "arguments": "{}"}} for i in ids]}
    return m if reasoning is None else {**m, "reasoning_content": reasoning}


def test_restores_a_dropped_turn_by_any_of_its_ids():
    store = ReasoningStore()
    store.record(["call_a", "call_b"], "two calls needed")
    messages = [{"role": "user", "content": "x"}, turn("call_b"), {"role": "tool", "tool_call_id": "call_b",
                                                                   "content": "ok"}]
    out, n = store.restore(messages)
    assert n == 1 and out[1]["reasoning_content"] == "two calls needed"
    assert "reasoning_content" not in messages[1]  # the request's own messages are not changed
    assert out[0] is messages[0] and out[2] is messages[2]


def test_leaves_kept_reasoning_unknown_ids_and_other_roles_alone():
    store = ReasoningStore()
    store.record(["call_a"], "mine")
    messages = [turn("call_a", reasoning="the client's own"), turn("call_z"),
                {"role": "assistant", "content": "no calls"}, {"role": "user", "content": "call_a"}]
    out, n = store.restore(messages)
    assert n == 0 and out == messages


def test_a_turn_without_calls_or_reasoning_is_not_kept():
    store = ReasoningStore()
    store.record([], "no calls")
    store.record(["call_a"], None)
    assert len(store) == 0 and store.lookup(["call_a"]) is None


def test_bounded_oldest_first():
    store = ReasoningStore(max_turns=2, max_chars=10)
    store.record(["a"], "1234")
    store.record(["b"], "5678")
    store.lookup(["a"])  # used: b is now the oldest
    store.record(["c"], "90")
    assert store.lookup(["b"]) is None and store.lookup(["a"]) == "1234" and store.lookup(["c"]) == "90"
    store.record(["d"], "123456789")  # over the character bound with any other: alone
    assert len(store) == 1 and store.lookup(["d"]) == "123456789"
    store.record(["e"], "x" * 11)  # longer than the whole bound: not kept
    assert store.lookup(["e"]) is None
    with pytest.raises(ValueError, match="max_turns"):
        ReasoningStore(max_turns=0)


def test_an_sqlite_file_outlives_the_store(tmp_path):
    path = tmp_path / "reasoning.sqlite"
    first = ReasoningStore(path)
    first.record(["call_a", "call_b"], "kept on disk")
    first.close()
    second = ReasoningStore(path)
    assert second.lookup(["call_b"]) == "kept on disk" and second.lookup(["call_a"]) == "kept on disk"
    assert second.lookup(["call_x"]) is None


def test_a_conversation_is_serialized_only_when_a_key_is_asked_for():
    serialized = []

    class Spy:  # not JSON: the hash writes it with str()
        def __str__(self):
            serialized.append(1)
            return "spy"

    history = [{"role": "user", "content": Spy()}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    late = Conversation(history[:1])
    late.add(history[1])
    assert not serialized  # a prompt refused for its length (a 5 MB message) is never serialized
    key = late.answer_key("answer")
    assert len(serialized) == 1 and late.answer_key("answer") == key and len(serialized) == 1
    assert Conversation([{"role": "user", "content": "spy"}, {"role": "assistant", "content": "a"}]).answer_key(
        "answer") == key  # the same bytes hashed as before: reasoning left out, the object as its str()

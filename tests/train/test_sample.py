import pytest

from dsv4.encoding import encode_request
from dsv4.encoding.tokens import EOS
from dsv4.train.sample import chat_sample, tokenize
from dsv4.train.tokenizer import train_tokenizer

REQUEST = {"messages": [
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "reasoning_content": "Add them.", "content": "5"},
    {"role": "user", "content": "And 4+4?"},
    {"role": "assistant", "reasoning_content": "Add again.", "content": "8"}],
    # with tools defined, V4 keeps each turn's reasoning in the conversation
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}


def test_spans_are_the_assistant_completions():
    s = chat_sample(REQUEST, "t")
    assert [s.text[a:b] for a, b in s.spans] == ["Add them.</think>5" + EOS, "Add again.</think>8" + EOS]
    # the text before a span is exactly the prompt the server renders for that turn
    assert s.text[:s.spans[1][0]] == encode_request({**REQUEST, "messages": REQUEST["messages"][:3]})


def test_tokens_are_trained_only_inside_spans():
    s = chat_sample(REQUEST, "t")
    tok = train_tokenizer([s.text] * 5, vocab_size=300)
    ids, trained = tokenize(s, tok)
    text = tok.decode([i for i, t in zip(ids, trained, strict=True) if t], skip_special_tokens=False)
    assert text == "".join(s.text[a:b] for a, b in s.spans)


def test_a_conversation_whose_prompts_are_not_prefixes_is_refused():
    # without tools, V4 drops earlier turns' reasoning: the first turn's prompt is then no prefix of the whole
    with pytest.raises(ValueError, match="turn 1 is not a prefix"):
        chat_sample({"messages": REQUEST["messages"]}, "t")

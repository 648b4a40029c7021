"""The backends' tokenizing: the same ids as the tokenizer's own `encode`, without holding the GIL (the server's
event loop streams the other requests while a long prompt is tokenized on a worker thread)."""

import threading

from dsv4.server.backend import encode_text


def test_text_encodes_as_the_tokenizer_does(real_tokenizer):
    for text in ("", "hi", "<｜begin▁of▁sentence｜>sys<｜User｜>héllo 🙂\n\n<think>x</think>", "word " * 5000):
        assert encode_text(real_tokenizer, text) == real_tokenizer.encode(text, add_special_tokens=False).ids


def test_a_long_prompt_is_tokenized_without_holding_the_gil(real_tokenizer):
    text = "The quick brown fox jumps over the lazy dog, 12345. " * 6000  # ~300K characters
    done, ticks = threading.Event(), 0
    worker = threading.Thread(target=lambda: (encode_text(real_tokenizer, text), done.set()))
    worker.start()
    while not done.is_set():  # this thread runs only while the worker leaves the GIL
        ticks += 1
        done.wait(0.001)
    worker.join()
    # with `encode` (the GIL held throughout) this loop got 0-2 turns; released, it turns every millisecond
    assert ticks > 20

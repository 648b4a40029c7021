"""The per-character scans of a request's text (special-token text, lone surrogates) go a slice at a time, so a
5 MB prompt neither holds the GIL over one long call (other requests' threads and the event loop stall) nor finds
anything different from a scan of the whole text."""

import random
import re
import sys
import threading

import pytest

from dsv4.server import control_tokens, surrogates
from dsv4.server.control_tokens import ZERO_WIDTH_SPACE, ControlTokens
from dsv4.server.surrogates import LONE, REPLACEMENT, without_lone_surrogates

TOKENS = ["<｜User｜>", "<｜Assistant｜>", "</think>", "｜DSML｜", "<think>"]


class Recording:
    """A compiled pattern that notes each scan in `events`."""

    def __init__(self, pattern: re.Pattern, events: list):
        self.pattern, self.events = pattern, events

    def finditer(self, *args):
        self.events.append("scan")
        return self.pattern.finditer(*args)


def whole_text_neutralised(tokens: ControlTokens, text: str) -> str:
    """The reference: every start found by one scan of the whole text."""
    starts = [m.start() for m in tokens._starts.finditer(text)]
    pieces = [text[a + 1 if i else 0:b + 1] for i, (a, b) in enumerate(zip([0, *starts], starts, strict=False))]
    return ZERO_WIDTH_SPACE.join([*pieces, text[starts[-1] + 1:]]) if starts else text


def test_other_threads_run_while_a_big_text_is_neutralised():
    tokens, events = ControlTokens(TOKENS), []
    tokens._starts = Recording(tokens._starts, events)
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            if not events or events[-1] != "tick":
                events.append("tick")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # a waiting thread asks for the GIL sooner: many chances in one scan, not timing
    thread = threading.Thread(target=ticker)
    try:
        thread.start()
        while not events:  # the ticker runs before the scan starts
            pass
        text = "<" * (2 << 20)  # every position starts a token's first character: the costliest text to scan
        assert tokens.neutralise(text) is text
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    scans = [i for i, e in enumerate(events) if e == "scan"]
    assert "tick" in events[scans[0]:scans[-1]], "no other thread ran during the scan"
    assert len(scans) == (2 << 20) // control_tokens.SLICE


def test_slices_find_what_the_whole_text_holds(monkeypatch):
    tokens = ControlTokens(TOKENS)
    rng = random.Random(0)
    parts = [*TOKENS, "｜DSML｜DSML｜", "<｜", "｜>", "<", "｜", "x", "think>", "</"]
    for cut in (1, 2, 3, 7, 11):
        monkeypatch.setattr(control_tokens, "SLICE", cut)
        for _ in range(200):
            text = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 12)))
            assert tokens.neutralise(text) == whole_text_neutralised(tokens, text), (cut, text)


@pytest.mark.parametrize("cut", [1, 2, 5, 64])
def test_surrogates_across_slice_cuts_are_all_replaced(monkeypatch, cut):
    monkeypatch.setattr(surrogates, "SLICE", cut)
    rng = random.Random(cut)
    for _ in range(200):
        text = "".join(rng.choice(["a", "é", "中", "\ud83d", "\ude00", "😀", "\udfff"]) for _ in range(40))
        assert without_lone_surrogates(text) == LONE.sub(REPLACEMENT, text)
    clean = "é中😀" * 50
    assert without_lone_surrogates(clean) is clean  # nothing to replace: the string itself, not a copy

"""Special-token text in what a client sends, neutralised before the prompt is rendered.

V4's tokenizer reads its special tokens wherever their text stands in the prompt, and DeepSeek's encoders paste
message text in verbatim: a user message or a tool result holding `<｜User｜>`, `<｜end▁of▁sentence｜>`, `</think>`
or a placeholder token would be read as that control token (a forged turn boundary). `dsv4.encoding` guards the
other direction (special tokens in what the model writes, `token_guard.py`).

Neutralised, not refused: a zero-width space (U+200B) goes after the first character of each occurrence, so the
text reads the same and tokenizes as ordinary text. Refusing would fail every later turn of an agent whose tool
once read a file that spells a token (the tokenizer's own files, an encoder's source). It applies to every string
of a chat body (messages, tools, response_format); not to `/v1/completions`, whose raw prompt spells its tokens on
purpose. A replayed assistant turn in which the model itself wrote such text renders neutralised too (a prefix-cache
miss from that turn on, and the model sees text rather than the token).
"""

import re
from typing import Any

from tokenizers import Tokenizer

ZERO_WIDTH_SPACE = "\u200b"
# characters scanned in one regex call: a call holds the GIL throughout (5M characters took 338 ms, during which
# no other thread of the server ran; the event loop stalled up to 1 s with 6 such prompts at once); between slices
# the interpreter lets a waiting thread run
SLICE = 1 << 16


def _trie_pattern(words: list[str]) -> str:
    """A regex matching any of `words`, shaped as their trie: at each position the engine follows one path of
    single characters, so scanning costs the same with 1,300 tokens as with 5 (a flat alternation of V4's 1,283
    tokens took minutes on a text of 5M '<')."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in node.items() if ch]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        return "(?:" + "|".join(branches) + ")" + ("?" if "" in node else "")

    return emit(trie)


class ControlTokens:
    """The tokenizer's added tokens (special or not: V4 adds `｜DSML｜` and `<think>` as such), found in text."""

    def __init__(self, tokens: list[str]):
        self.tokens = sorted({t for t in tokens if len(t) > 1})
        # a lookahead finds every start, overlapping ones too (`｜DSML｜DSML｜` holds two): each gets broken
        self._starts = re.compile(f"(?=(?:{_trie_pattern(self.tokens)}))") if self.tokens else None
        self._longest = max(map(len, self.tokens), default=0)

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "ControlTokens":
        return cls([t.content for t in tokenizer.get_added_tokens_decoder().values()])

    def neutralise(self, text: str) -> str:
        """`text` with a zero-width space after the first character of each token it spells."""
        starts = self._token_starts(text)
        if not starts:
            return text
        pieces, last = [], 0
        for s in starts:
            pieces.append(text[last:s + 1])
            last = s + 1
        pieces.append(text[last:])
        return ZERO_WIDTH_SPACE.join(pieces)

    def _token_starts(self, text: str) -> list[int]:
        """Where each token spelled in `text` starts, found `SLICE` characters at a time: a slice's scan runs on
        past its end by the longest token less one character, so a token across the cut is found by the slice it
        starts in, and only there."""
        if self._starts is None:
            return []
        starts = []
        for begin in range(0, len(text), SLICE):
            end = begin + SLICE
            starts += [m.start() for m in self._starts.finditer(text, begin, end + self._longest - 1)
                       if m.start() < end]
        return starts

    def neutralise_all(self, value: Any) -> Any:
        """Every string of `value` (parsed JSON, object keys included) neutralised."""
        if isinstance(value, str):
            return self.neutralise(value)
        if isinstance(value, list):
            return [self.neutralise_all(v) for v in value]
        if isinstance(value, dict):
            return {self.neutralise_all(k): self.neutralise_all(v) for k, v in value.items()}
        return value


def neutralised(body: dict, backend) -> dict:
    """A chat body with the special-token text of `backend`'s tokenizer neutralised (`backend.control_tokens`;
    a backend without it renders the body as it is)."""
    tokens: ControlTokens | None = getattr(backend, "control_tokens", None)
    return tokens.neutralise_all(body) if tokens is not None else body

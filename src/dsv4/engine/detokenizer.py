"""`Detokenizer`: a request's generated text, grown one token at a time, and its stop-string scan.

Decoding the whole output after every token, and searching it all for stop strings, costs O(n) per token: O(n²)
over a long agent turn. Here each token is decoded once (tokenizers' `DecodeStream`, which holds back a split
UTF-8 character until it is complete, so the running text only ever grows), and stop strings are looked for only
where a new one can end: in the text added since the last token and the `longest stop - 1` characters before it.
When the request ends, its text is decoded once in full, so the final text equals decoding the output ids.
While it runs, `visible` holds back a tail that could still grow into a stop string, so streamed text never
shows part of a stop string that then disappears from the final text.
"""

import functools

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer | None, stops: tuple[str, ...] = ()):
        self.tokenizer, self.stops = tokenizer, stops
        self.longest = max(map(len, stops), default=0)
        self.stream = DecodeStream(skip_special_tokens=False) if tokenizer is not None else None
        self.text = ""

    def add(self, token_id: int) -> int:
        """Appends a token's text; returns where the first stop string starts in `text`, or -1."""
        if self.stream is None:
            return -1
        old = len(self.text)
        chunk = self.stream.step(self.tokenizer, token_id)
        if not chunk:
            return -1
        self.text += chunk
        # no stop string lies wholly in the old text (it would have been found then), so a new one ends in chunk
        start = max(0, old - self.longest + 1)
        return min((i for s in self.stops if (i := self.text.find(s, start)) >= 0), default=-1)

    @property
    def visible(self) -> str:
        """`text` less its longest tail that is a proper prefix of a stop string: it only ever grows, and the
        final text (cut before a stop string, or whole) starts with it."""
        text = self.text
        for k in range(min(self.longest - 1, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stops):
                return text[:-k]
        return text

    def full(self, token_ids: list[int]) -> str:
        return decode_ids(self.tokenizer, token_ids)


def decode_ids(tokenizer: Tokenizer | None, token_ids: list[int]) -> str:
    """The text of token_ids decoded at once, special tokens kept (a trailing split character shows as U+FFFD);
    "" without a tokenizer."""
    return tokenizer.decode(token_ids, skip_special_tokens=False) if tokenizer is not None else ""


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the printable character a byte-level BPE vocabulary uses for each
    byte -> the byte (printable ASCII and Latin-1 stand for themselves, the other bytes map to U+0100 onwards)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {chr(b): b for b in kept} | {chr(256 + i): b for i, b in enumerate(moved)}


@functools.cache
def char_of_byte() -> dict[int, str]:
    """The inverse: byte -> the character a byte-level BPE vocabulary spells it with."""
    return {b: c for c, b in _byte_of_char().items()}


class TokenBytes:
    """token id -> the bytes it stands for (a byte-level token can hold part of a UTF-8 character; OpenAI's
    logprobs carry these bytes beside the text). Special tokens, and vocabularies that are not byte-level: their
    text as UTF-8."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.get_added_tokens_decoder())
        self.table = _byte_of_char()

    def __call__(self, token_id: int) -> bytes:
        piece = self.tokenizer.id_to_token(token_id)
        if piece is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary ({self.tokenizer.get_vocab_size()} "
                             "tokens)")
        if token_id in self.special or not all(ch in self.table for ch in piece):
            return piece.encode()
        return bytes(self.table[ch] for ch in piece)

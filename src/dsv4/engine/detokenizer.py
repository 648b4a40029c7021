"""`Detokenizer`: a request's generated text, grown one token at a time, handed out as deltas, and its stop-string
scan.

Decoding the whole output after every token, and searching it all for stop strings, costs O(n) per token: O(n²)
over a long agent turn. Here each token is decoded once (tokenizers' `DecodeStream`, which holds back a split
UTF-8 character until it is complete, so the running text only ever grows) into a `StopText`, which looks for stop
strings only where a new one can end and hands the text out without copying what came before (holding back a
tail that could still grow into a stop string). When the request ends, the rest is handed out: cut before the
stop string, or the rest of the output decoded once in full, so the final text equals decoding the output ids.
"""

import functools

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from .stop_text import StopText


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer | None, stops: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stream = DecodeStream(skip_special_tokens=False) if tokenizer is not None else None
        self.out = StopText(stops)
        self.held: list[int] = []  # tokens since the last chunk (a character split between them)

    def add(self, token_id: int) -> int:
        """Appends a token's text; returns where the first stop string starts in `text`, or -1."""
        if self.stream is None:
            return -1
        chunk = self.stream.step(self.tokenizer, token_id)
        if not chunk:
            self.held.append(token_id)
            return -1
        held, self.held = self.held, []
        # a chunk several tokens made (a character split between them): decoding the output after each token would
        # have shown the chunk's whole characters before the split one tokens earlier (that one as U+FFFD), and a
        # stop string found there ends the text there. Those few tokens are decoded again to look where it would.
        return self.out.add(chunk, (self.full(held[:i]) for i in range(1, len(held) + 1)))

    def take(self) -> str:
        """The text added since the last take (see `StopText.take`)."""
        return self.out.take()

    def end_at_stop(self, cut: int) -> str:
        return self.out.end_at_stop(cut)

    def end(self, token_ids: list[int]):
        """Ends the text as the whole output `token_ids` decoded at once (a split character left at the end shows
        as U+FFFD): what was handed out is kept, the rest of the full decode is still to take."""
        self.out.end(self.full(token_ids))

    @property
    def text(self) -> str:
        return self.out.text

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

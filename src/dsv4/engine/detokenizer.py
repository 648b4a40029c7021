"""`Detokenizer`: a request's generated text, grown one token at a time, handed out as deltas, and its stop-string
scan.

Decoding the whole output after every token, and searching it all for stop strings, costs O(n) per token: O(n²)
over a long agent turn. Here each token is decoded once (tokenizers' `DecodeStream`, which holds back a split
UTF-8 character until it is complete, so the running text only ever grows), and stop strings are looked for only
where a new one can end: in the text added since the last token and the `longest stop - 1` characters before it.
No step copies the text so far: the decoded pieces are kept in a list, and `take` hands out only what was added
since the last take, holding back a tail that could still grow into a stop string (so streamed text never shows
part of a stop string that then disappears from the final text). When the request ends (`end`, `end_at_stop`),
the rest is handed out: cut before the stop string, or the rest of the output decoded once in full, so the final
text equals decoding the output ids.
"""

import functools

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer | None, stops: tuple[str, ...] = ()):
        self.tokenizer, self.stops = tokenizer, stops
        self.longest = max(map(len, stops), default=0)
        self.stream = DecodeStream(skip_special_tokens=False) if tokenizer is not None else None
        self.pieces: list[str] = []  # the text, as each token's chunk (joined only when asked: `text`)
        self.length = 0  # characters in the text
        self.tail = ""  # its last `longest - 1` characters: where a stop string split across tokens starts
        self.pending = ""  # the text not handed out yet (it ends with the held-back tail)
        self.num_taken = 0  # characters handed out
        self.held: list[int] = []  # tokens since the last chunk (a character split between them)
        self.stop: str | None = None  # the stop string found
        self.ended = False

    def add(self, token_id: int) -> int:
        """Appends a token's text; returns where the first stop string starts in `text`, or -1."""
        if self.stream is None:
            return -1
        chunk = self.stream.step(self.tokenizer, token_id)
        if not chunk:
            self.held.append(token_id)
            return -1
        # no stop string lies wholly in the old text (it would have been found then), so a new one ends in chunk
        tail, base = self.tail, self.length - len(self.tail)
        window = tail + chunk
        self.pieces.append(chunk)
        self.length += len(chunk)
        self.pending += chunk
        self.tail = window[max(0, len(window) - self.longest + 1):] if self.longest > 1 else ""
        held, self.held = self.held, []
        # a chunk several tokens made (a character split between them): decoding the output after each token would
        # have shown the chunk's whole characters before the split one tokens earlier (that one as U+FFFD), and a
        # stop string found there ends the text there. Those few tokens are decoded again to look where it would.
        early = (self._find(tail + self.full(held[:i])) for i in range(1, len(held) + 1))
        found = next((f for f in early if f is not None), None) or self._find(window)
        if found is None:
            return -1
        i, self.stop = found
        return base + i

    def _find(self, window: str) -> tuple[int, str] | None:
        """The earliest stop string in window (at a tie, the first listed) and where it starts."""
        found = [(i, s) for s in self.stops if (i := window.find(s)) >= 0]
        return min(found, key=lambda f: f[0]) if found else None

    def take(self) -> str:
        """The text added since the last take, less its longest tail that is a proper prefix of a stop string
        (until the request ends): the takes so far are always a prefix of the final text."""
        held = 0 if self.ended else self._held()
        out = self.pending[:len(self.pending) - held]
        self.pending = self.pending[len(out):]
        self.num_taken += len(out)
        return out

    def _held(self) -> int:
        # the held tail lies within `pending`: a tail of the text that is a stop's prefix was already one before
        text = self.pending
        for k in range(min(self.longest - 1, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stops):
                return k
        return 0

    def end_at_stop(self, cut: int) -> str:
        """Ends the text before the stop string found at `cut` (it starts in what was never handed out, since a
        stop's beginning is held back); returns that stop string."""
        self.pending, self.ended = self.pending[:cut - self.num_taken], True
        return self.stop

    def end(self, token_ids: list[int]):
        """Ends the text as the whole output `token_ids` decoded at once (a split character left at the end shows
        as U+FFFD): what was handed out is kept, the rest of the full decode is still to take. Should the one-shot
        decode disagree with what was handed out, the streamed text stands."""
        full = self.full(token_ids)
        taken = "".join(self.pieces)[:self.num_taken]
        if full.startswith(taken):
            self.pending = full[self.num_taken:]
        self.ended = True

    @property
    def text(self) -> str:
        """The whole running text (joined: O(n), for tests and the end of a request)."""
        return "".join(self.pieces)

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

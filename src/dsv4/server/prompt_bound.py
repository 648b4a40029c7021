"""A text prompt too long for the context, refused before it is tokenized whole.

Tokenizing is the costly step of a prompt that is too long: 20 MB of text took 22-25 s and 3.6 GB only to be
refused for its length. Two checks come first (`check_prompt_size`):

- a bound on characters: a token stands for at most `longest` bytes of text (the vocabulary's longest entry),
  so a prompt of n characters (each at least one UTF-8 byte) has at least n / longest tokens, and one of more
  than max_model_len * longest characters cannot fit. It holds for a tokenizer that keeps all of its input
  (V4's: no normalizer; Split(Isolated) and ByteLevel pre-tokenizers); for any other (a normalizer may shrink
  text, a pre-tokenizer may drop it) there is no such bound;
- under that bound a prompt can still hold far more tokens than fit (V4: 8.4M characters for 65,536 tokens),
  so a long one is counted in pieces, and refused once the pieces pass twice the context.
"""

import functools
import json
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from .errors import RequestError

if TYPE_CHECKING:
    from .backend import Backend

COUNT_OVER = 4  # characters a token: a longer prompt is counted in pieces first (text averages about 4)
CHUNK = 1 << 16  # characters tokenized at a time when counting

# pre-tokenizers that only cut text into pieces (or map each byte to one character), never drop any
_KEEPING = {"ByteLevel", "Split", "Digits", "Punctuation", "Sequence"}


def max_prompt_chars(tokenizer: Tokenizer, max_model_len: int) -> int | None:
    """max_model_len x the longest token's bytes; None where the tokenizer may shrink its input."""
    longest = longest_token_bytes(tokenizer)
    return None if longest is None else max_model_len * longest


@functools.cache
def longest_token_bytes(tokenizer: Tokenizer) -> int | None:
    """The most bytes of text one token stands for; None where the tokenizer may shrink its input."""
    normalizer = _spec(tokenizer.normalizer)
    if normalizer is not None and normalizer != {"type": "Sequence", "normalizers": []}:
        return None
    pieces = _pre_tokenizers(_spec(tokenizer.pre_tokenizer))
    if any(p.get("type") not in _KEEPING or p.get("behavior") == "Removed" for p in pieces):
        return None
    added = tokenizer.get_added_tokens_decoder()
    special = max((len(t.content.encode()) for t in added.values()), default=1)
    byte_level = any(p.get("type") == "ByteLevel" for p in pieces)
    # a byte-level entry spells each byte as one character; any other entry's UTF-8 is at least the text it
    # stands for (SentencePiece's "▁" is 3 bytes for a space, a byte-fallback "<0x41>" 6 for one byte)
    regular = max((len(p) if byte_level else len(p.encode())
                   for p in tokenizer.get_vocab(with_added_tokens=False)), default=1)
    return max(special, regular)


def _spec(part) -> dict | None:
    return None if part is None else json.loads(part.__getstate__())


def _pre_tokenizers(spec: dict | None) -> list[dict]:
    if spec is None:
        return []
    return [spec, *(p for inner in spec.get("pretokenizers", []) for p in _pre_tokenizers(inner))]


def check_prompt_size(prompt: str, backend: "Backend", where: str) -> None:
    """Refuses (400, context_length_exceeded) a prompt too long for the context before it is tokenized whole:
    over `backend.max_prompt_chars` characters (it cannot fit however it tokenizes), or, when longer than
    `COUNT_OVER` characters a token, found in `CHUNK`-character pieces to take over twice the context (the pieces
    are tokenized one at a time and the count stops there, so the cost is bounded by the context, not the prompt:
    an 8 MB prompt of 5.4M tokens took 41 s and 2 GB to tokenize whole). Pieces tokenize as the whole would but
    at their cuts, a few tokens apart; twice the context leaves any prompt that fits far from refusal."""
    n, limit, context = len(prompt), backend.max_prompt_chars, backend.max_model_len
    if limit is not None and n > limit:
        raise RequestError(f"this model's maximum context length is {context} tokens, at most {limit} characters "
                           f"of text (a token is at most {limit // context} bytes); the prompt ({where}) has {n}",
                           code="context_length_exceeded", param=where)
    if n <= context * COUNT_OVER:
        return
    counted = 0
    for start in range(0, n, CHUNK):
        counted += len(backend.encode(prompt[start:start + CHUNK]))
        if counted > 2 * context:
            raise RequestError(f"this model's maximum context length is {context} tokens; the prompt ({where}) "
                               f"takes more than {counted} in its first {start + CHUNK} of {n} characters",
                               code="context_length_exceeded", param=where)

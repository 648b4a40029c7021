"""How many characters a text prompt can have and still fit in the context, known before tokenizing it.

Tokenizing is the costly step of a prompt that is too long: 20 MB of text took 22-25 s and 3.6 GB only to be
refused for its length. But a token stands for at most `longest` bytes of text (the vocabulary's longest entry),
so a prompt of n characters (each at least one UTF-8 byte) has at least n / longest tokens: one of more than
max_model_len * longest characters cannot fit, and is refused without being tokenized. This holds for a
tokenizer that keeps all of its input (V4's: no normalizer; Split(Isolated) and ByteLevel pre-tokenizers); for
any other (a normalizer may shrink text, a pre-tokenizer may drop it) the bound is unknown and prompts are
tokenized as before, capped only by the request-body limit.
"""

import functools
import json

from tokenizers import Tokenizer

from .errors import RequestError

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


def check_prompt_chars(prompt: str, limit: int | None, max_model_len: int, where: str) -> None:
    """Refuses (400, context_length_exceeded) a prompt too long to fit however it tokenizes."""
    if limit is not None and len(prompt) > limit:
        longest = limit // max_model_len
        raise RequestError(f"this model's maximum context length is {max_model_len} tokens, at most {limit} "
                           f"characters of text (a token is at most {longest} bytes); the prompt ({where}) has "
                           f"{len(prompt)}", code="context_length_exceeded", param=where)

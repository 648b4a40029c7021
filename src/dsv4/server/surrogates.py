"""Lone surrogates in a request body, replaced with U+FFFD before anything reads it.

JSON clients send `"\\ud800"` escaped; it decodes to a Python string that no UTF-8 encoder, and no tokenizer,
accepts (it was a plain-text 500 from the tokenizer on every endpoint). A surrogate pair decodes to its one
character, so any surrogate left in a string is lone.

Replaced rather than refused, in every string of the body (object keys included): it is what a UTF-8 decoder
makes of bytes that are not text, and what servers that decode leniently do. An agent whose history holds such a
string (a tool output cut between the two halves of a UTF-16 pair) would otherwise be refused on every later turn
of its conversation, as Anthropic's API does ("no low surrogate in string").
"""

import re
from typing import Any

from pydantic import BaseModel, model_validator

LONE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# characters checked at a time: one call over a 5 MB prompt held the GIL (and the event loop, where the body is
# validated) for 97 ms; between slices a waiting thread runs
SLICE = 1 << 16


def without_lone_surrogates(value: Any) -> Any:
    """`value` (parsed JSON) with each lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _replaced(value)
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    return value


def _replaced(text: str) -> str:
    """`text` with its surrogates replaced: none in ASCII text (a flag, no scan), nor in text that encodes as UTF-8
    (a surrogate never does; encoding is ~7x faster than the regex), checked `SLICE` characters at a time."""
    if text.isascii():
        return text
    slices = [text[i:i + SLICE] for i in range(0, len(text), SLICE)]
    replaced = [_slice_replaced(s) for s in slices]
    return text if all(r is s for r, s in zip(replaced, slices, strict=True)) else "".join(replaced)


def _slice_replaced(text: str) -> str:
    try:
        text.encode()
        return text
    except UnicodeEncodeError:  # each surrogate is one character: a cut never splits what LONE matches
        return LONE.sub(REPLACEMENT, text)


class ApiRequest(BaseModel):
    """A request body whose text is valid Unicode once validated."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        try:
            return without_lone_surrogates(data)
        except RecursionError:  # json.loads nests about as deep as Python recurses
            raise ValueError("the body nests too deeply") from None

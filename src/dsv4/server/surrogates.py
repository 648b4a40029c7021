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


def without_lone_surrogates(value: Any) -> Any:
    """`value` (parsed JSON) with each lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return LONE.sub(REPLACEMENT, value) if LONE.search(value) else value
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    return value


class ApiRequest(BaseModel):
    """A request body whose text is valid Unicode once validated."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        try:
            return without_lone_surrogates(data)
        except RecursionError:  # json.loads nests about as deep as Python recurses
            raise ValueError("the body nests too deeply") from None

"""Regexes of tool schemas (`pattern`, `patternProperties`) evaluated in bounded time.

A tool schema comes from whoever serves the tool (an MCP server), and the strings it is matched against from
the model: with Python's backtracking `re`, jsonschema took 16.7 s on 28 characters for `^(a+)+$`. Here a
pattern runs on RE2 (linear time) when RE2 reads its text exactly as Python's `re` does (a conservative check
of the text: literals, `.`, classes of literals and ranges, groups, alternation, quantifiers, `^`, and `$` at
the end of the pattern or of a top-level alternative); anything else (`\\d`, `\\w`, `\\b`, lookarounds,
backreferences, inline flags) runs on the `regex` module under a time budget shared by one validation, spelled
so that it parses the pattern as `re` does (`regex_module_text`). A pattern that runs out of budget, or is not
a valid regex, becomes a validation error naming it.

Results equal jsonschema's own on Python's `re`, except: `\\w \\d` on code points Python's Unicode database
leaves unassigned (the regex module's is newer), `\\W \\S` inside a class and every class under inline flags
(`(?i)`, `(?a)`), where the regex module's own tables stand (they differ on combining marks, superscript digits,
U+001C..U+001F); `patternProperties` regexes are tried one by one under `additionalProperties` (jsonschema joins
them with `|`, which renumbers backreferences and makes an empty pattern match nothing); and
`unevaluatedProperties` with `patternProperties` in one schema is refused, since jsonschema evaluates those
regexes where no keyword can bound them.
"""

import functools
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass

import jsonschema
import re2
import regex
from jsonschema import ValidationError

DEFAULT_BUDGET_S = 1.0
# Escapes RE2 and Python read alike: escaped punctuation and the control-character letters.
_SAME_ESCAPES = frozenset(".^$*+?()[]{}|\\/-nrtfv")
_COUNTED = re.compile(r"\{(\d+(,\d*)?|,\d+)\}")
_CLASS_START = re.compile(r"\[\^?\]?")
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux]")  # under these the regex module keeps its own class tables
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@dataclass
class RegexBudget:
    """The time the budgeted engine may spend in one validation, and the first pattern that failed in it."""

    seconds: float
    deadline: float
    failure: str | None = None

    @classmethod
    def start(cls, seconds: float) -> "RegexBudget":
        return cls(seconds, time.monotonic() + seconds)


# The budget of the validation in progress (each thread or task sees its own); see `validate_arguments`.
current_budget: ContextVar[RegexBudget | None] = ContextVar("current_budget", default=None)


class PatternFailure(ValidationError):
    """A schema pattern that could not be evaluated: not a valid regex, or out of time."""


def tokens(pattern: str):
    """(text, role) pieces of a pattern as Python's `re` reads them. Roles: "escape" (outside a class), "class"
    (an opening `[` with any `^`, and a `]` first in it), "in_class", "end_class", "group" (`(` with any `?x`),
    "end_group", "repeat" (a counted `{m}`, `{m,}`, `{,n}`, `{m,n}`), "anchor_end" (`$`), and "char"."""
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            yield pattern[i: i + 2], "in_class" if in_class else "escape"
            i += 2
        elif in_class:
            in_class = c != "]"
            yield c, "in_class" if in_class else "end_class"
            i += 1
        elif c == "[":
            m = _CLASS_START.match(pattern, i)
            yield m.group(), "class"
            in_class, i = True, m.end()
        elif c == "(":
            n = 3 if pattern[i + 1: i + 2] == "?" else 1
            yield pattern[i: i + n], "group"
            i += n
        elif c == "{" and (m := _COUNTED.match(pattern, i)):
            yield m.group(), "repeat"
            i = m.end()
        else:
            yield c, {")": "end_group", "$": "anchor_end"}.get(c, "char")
            i += 1


def re2_reads_like_python(pattern: str) -> bool:
    """Whether RE2 gives this pattern text the meaning Python's `re` gives it (False when unsure)."""
    depth, previous, pieces = 0, "", list(tokens(pattern))
    for k, (text, role) in enumerate(pieces):
        after = pieces[k + 1][0] if k + 1 < len(pieces) else ""
        if text.startswith("\\") and text[1:] not in _SAME_ESCAPES:
            return False  # \d \w \s \b are Unicode in Python, ASCII in RE2; others differ or are unknown
        if role in ("char", "in_class", "end_class") and text in "[{}" or role == "class" and text.endswith("]"):
            return False  # `[[:alpha:]]` is a POSIX class to RE2; `{` Python reads literally; `[]a]`
        if role == "group":
            if text not in ("(", "(?:"):
                return False  # lookarounds, named groups, inline flags
            depth += 1
        depth -= role == "end_group"
        if role == "repeat" and (text.startswith("{,") or previous in ("", "(", "(?:", "|", "^")):
            return False
        if role == "anchor_end" and not (after == "" or after == "|" and depth == 0):
            return False  # Python's `$` also matches before a final newline; emulated only at the end
        previous = text
    return depth == 0 and (not pieces or pieces[-1][1] not in ("class", "in_class"))


# Python's `\\w \\d \\s` (str patterns) as regex-module classes, equal on every code point Python's Unicode database
# assigns (the module's own `\\w` takes combining marks and superscript digits, its `\\s` leaves out U+001C..1F).
PYTHON_CLASSES = {"w": r"[\p{L}\p{N}_]", "W": r"[^\p{L}\p{N}_]", "d": r"\p{Nd}", "D": r"\P{Nd}",
                  "s": r"[\s\x1c-\x1f]", "S": r"[^\s\x1c-\x1f]"}
# ... and inside a class (`\\W`, `\\S` there keep the module's tables: a negated union has no spelling in a class).
PYTHON_CLASS_ITEMS = {"w": r"\p{L}\p{N}_", "d": r"\p{Nd}", "D": r"\P{Nd}", "s": r"\s\x1c-\x1f"}
_WORD = PYTHON_CLASSES["w"]
PYTHON_BOUNDARIES = {
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?!\\A\\Z)(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",  # `re` finds no \B in an empty string
}


def regex_module_text(pattern: str) -> str:
    """The pattern spelled so that the `regex` module reads it as Python's `re` does: a `[` inside a class and a
    `{` that is not a counted repeat are literal to `re` (a POSIX class and a fuzzy-match constraint to `regex`),
    and `\\d \\w \\s \\b` take Python's classes."""
    own_tables = _INLINE_FLAGS.search(pattern) is None
    out = []
    for text, role in tokens(pattern):
        if text in "[{" and role in ("in_class", "char"):
            text = "\\" + text
        elif own_tables and role == "escape":
            text = PYTHON_CLASSES.get(text[1:]) or PYTHON_BOUNDARIES.get(text[1:]) or text
        elif own_tables and role == "in_class" and text.startswith("\\"):
            text = PYTHON_CLASS_ITEMS.get(text[1:], text)
        out.append(text)
    return "".join(out)


class SchemaPattern:
    """One schema regex, compiled for the engine that evaluates it."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        try:
            self._fallback = regex.compile(regex_module_text(pattern))
        except regex.error as e:
            raise ValueError(f"pattern {pattern!r} is not a valid regex ({e})") from None
        self._re2, self._dollar = None, "$" in pattern
        if re2_reads_like_python(pattern):
            try:
                self._re2 = re2.compile(pattern, _RE2_OPTIONS)
            except re2.error:
                pass  # beyond RE2 (a repeat count over 1000, its memory limit): the budgeted engine runs it

    def search(self, text: str, budget: RegexBudget) -> bool:
        """`re.search(pattern, text) is not None`; raises TimeoutError past the budget's deadline."""
        if self._re2 is not None:
            try:
                # Python's `$` also matches before a final newline: try the text without it as well (every
                # `$` ends the pattern or a top-level alternative, so nothing else changes).
                return self._re2.search(text) is not None or (
                    self._dollar and text.endswith("\n") and self._re2.search(text[:-1]) is not None)
            except UnicodeEncodeError:
                pass  # a lone surrogate, which RE2's UTF-8 cannot hold
        left = budget.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return self._fallback.search(text, timeout=left) is not None


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> SchemaPattern:
    return SchemaPattern(pattern)


def search(pattern: str, text: str) -> bool | PatternFailure:
    """Whether `pattern` matches somewhere in `text`, or the failure to report (also kept in the budget)."""
    budget = current_budget.get() or RegexBudget.start(DEFAULT_BUDGET_S)
    try:
        started = time.monotonic()
        compiled_pattern = compiled(pattern)
        budget.deadline += time.monotonic() - started  # compiling is not charged: it does not grow with the text
        return compiled_pattern.search(text, budget)
    except ValueError as e:
        message = str(e)
    except TimeoutError:
        message = (f"the schema pattern {pattern!r} did not finish within the {budget.seconds:g} s regex budget on a"
                   f" {len(text)}-character string (catastrophic backtracking?); the arguments cannot be checked")
    budget.failure = budget.failure or message
    return PatternFailure(message)


# ---- the jsonschema keywords that evaluate regexes, on `search` ---------------------------------------------

def pattern_keyword(validator, patrn, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    found = search(patrn, instance)
    if isinstance(found, PatternFailure):
        yield found
    elif not found:
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def pattern_properties_keyword(validator, patterns, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            found = search(patrn, key)
            if isinstance(found, PatternFailure):
                yield found
            elif found:
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def additional_properties_keyword(base):
    """jsonschema's `additionalProperties`, with the regexes of `patternProperties` evaluated by `search` (one by
    one: jsonschema joins them with `|`, which renumbers backreferences)."""

    def keyword(validator, extra_schema, instance, schema):
        if not validator.is_type(instance, "object") or "patternProperties" not in schema:
            yield from base(validator, extra_schema, instance, schema)
            return
        extras = []
        for key in instance:
            if key in schema.get("properties", {}):
                continue
            found = [search(p, key) for p in schema["patternProperties"]]
            yield from (f for f in found if isinstance(f, PatternFailure))
            if not any(f is True for f in found):
                extras.append(key)
        if validator.is_type(extra_schema, "object"):
            for key in extras:
                yield from validator.descend(instance[key], extra_schema, path=key)
        elif not extra_schema and extras:
            verb = "does" if len(extras) == 1 else "do"
            names = ", ".join(repr(k) for k in sorted(extras))
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {patterns}")

    return keyword


@functools.cache
def bounded_validator(base: type) -> type:
    """`base` (a jsonschema validator class) with its regex keywords evaluated by `search`."""
    return jsonschema.validators.extend(base, {
        "pattern": pattern_keyword,
        "patternProperties": pattern_properties_keyword,
        "additionalProperties": additional_properties_keyword(base.VALIDATORS["additionalProperties"]),
    })

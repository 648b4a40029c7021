"""Assembling one tool call's JSON arguments from its DSML parameters, streaming what is already certain.

The arguments text has the reference's shape, `{"k": v, "k2": v2}`: keys and `string="true"` values are
`json.dumps(..., ensure_ascii=False)`, and a `string="false"` value is its raw text when that is JSON the
tool schema admits. String values stream as escaped fragments; other values are buffered to their closer,
then coerced (`schema.coerce_value`). A first parameter named `arguments`/`input` that the schema lacks is
held back: if it stays alone, its object becomes the arguments (the history-wrapping bug, spec 5.6).
"""

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from dsv4.encoding.events import ArgumentsDelta, Event, ToolCallEnd, ToolCallStart
from dsv4.encoding.schema import coerce_value, is_wrapper_key, unwrap_wrapper


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _dumps(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


@dataclass
class _Param:
    key: str
    flag: str | None  # "true", "false", or None when the tag had no string attribute
    streaming: bool
    deferred: bool = False
    parts: list[str] = field(default_factory=list)


class CallBuilder:
    """One tool call in progress. `emit` receives events, `warn(kind, message)` records recoveries."""

    def __init__(self, index: int, name: str, schema: dict | None, emit: Callable[[Event], None], warn):
        self.index, self.name, self.schema = index, name, schema
        self._emit, self._warn = emit, warn
        self._keys: set[str] = set()
        self._n_emitted = 0
        self._param: _Param | None = None
        self._pending: tuple[str, str] | None = None  # a held-back wrapper parameter: (key, JSON text)
        emit(ToolCallStart(index, new_call_id(), name))

    def _args(self, text: str) -> None:
        self._emit(ArgumentsDelta(self.index, text))

    def _prefix(self, key: str) -> str:
        self._n_emitted += 1
        return ("{" if self._n_emitted == 1 else ", ") + _dumps(key) + ": "

    def _param_schema(self, key: str) -> dict | None:
        props = self.schema.get("properties") if isinstance(self.schema, dict) else None
        return props.get(key) if isinstance(props, dict) else None

    def open_param(self, key: str, flag: str | None) -> None:
        if key in self._keys:
            self._warn("duplicate", f"duplicate parameter {key!r} in call to {self.name!r}")
        self._flush_pending()
        first = not self._keys
        self._keys.add(key)
        if first and is_wrapper_key(key, self.schema):
            self._param = _Param(key, flag, streaming=False, deferred=True)
        elif flag == "true":
            self._param = _Param(key, flag, streaming=True)
            self._args(self._prefix(key) + '"')
        else:
            self._param = _Param(key, flag, streaming=False)
            self._args(self._prefix(key))

    def value(self, text: str) -> None:
        p = self._param
        if p.streaming:
            self._args(_dumps(text)[1:-1])
        else:
            p.parts.append(text)

    def close_param(self) -> None:
        p, self._param = self._param, None
        if p.streaming:
            self._args('"')
            return
        raw = "".join(p.parts)
        value = _dumps(raw) if p.flag == "true" else self._encode(p.key, raw)
        if p.deferred:
            self._pending = (p.key, value)
        else:
            self._args(value)

    def _encode(self, key: str, raw: str) -> str:
        text, note = coerce_value(raw, self._param_schema(key) if self.schema else None)
        if note:
            self._warn(f"coerce:{note}", f"parameter {key!r} of {self.name!r}: {note}")
        return text

    def _flush_pending(self) -> None:
        if self._pending:
            key, value = self._pending
            self._pending = None
            self._args(self._prefix(key) + value)

    def close(self) -> None:
        """End the call (closing an open parameter first) and emit the rest of its arguments."""
        if self._param is not None:
            self.close_param()
        inner = unwrap_wrapper(*self._pending, self.schema) if self._pending else None
        if inner is not None:
            self._warn("unwrap", f"unwrapped the lone {self._pending[0]!r} parameter of {self.name!r}")
            self._args(json.dumps(inner, ensure_ascii=False))
        else:
            self._flush_pending()
            self._args("{}" if self._n_emitted == 0 else "}")
        self._emit(ToolCallEnd(self.index))

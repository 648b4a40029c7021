"""DeepSeek-V4 chat encoding: prompt rendering (ga and preview dialects), DSML tool calls, parsing, streaming.

Pure Python: no torch, no token ids.
"""

from .errors import DSMLError, EncodingError
from .events import (
    ArgumentsDelta,
    ContentDelta,
    Event,
    ParseWarning,
    ReasoningDelta,
    ToolCallEnd,
    ToolCallStart,
    fold_events,
)
from .message import AssistantMessage, ToolCall
from .parse import parse_completion
from .render import encode_messages
from .request import encode_request
from .schema import ArgumentsError, validate_arguments
from .stream import StreamParser
from .tool_choice import FORCED_TOOL_CALLS

__all__ = [
    "ArgumentsDelta",
    "ArgumentsError",
    "AssistantMessage",
    "ContentDelta",
    "DSMLError",
    "EncodingError",
    "FORCED_TOOL_CALLS",
    "Event",
    "ParseWarning",
    "ReasoningDelta",
    "StreamParser",
    "ToolCall",
    "ToolCallEnd",
    "ToolCallStart",
    "encode_messages",
    "encode_request",
    "fold_events",
    "parse_completion",
    "validate_arguments",
]

"""`encode_messages`: OpenAI-format chat messages -> DeepSeek-V4 prompt text, in either dialect."""

from .conversation import check_messages, check_tool_results
from .errors import EncodingError
from .render_ga import encode_ga
from .render_preview import encode_preview
from .tool_choice import apply_tool_choice

DIALECTS = ("ga", "preview")
THINKING_MODES = ("thinking", "chat")


def encode_messages(messages: list[dict], *, thinking_mode: str = "thinking", reasoning_effort: str | None = None,
                    drop_thinking: bool = True, context: list[dict] | None = None,
                    add_default_bos_token: bool = True, dialect: str = "ga", tool_choice=None) -> str:
    """Render `messages` (after `context`, already in the KV cache) as V4 prompt text.

    dialect="ga" matches deepseek-recipe 0.2.0 (the released API format); dialect="preview" matches
    DeepSeek's April 2026 `encoding_dsv4.py`. `tool_choice` as in the OpenAI API: "none" offers no tools;
    "required" or a named function (ga, thinking off) makes the prompt open the tool-call block itself
    (`FORCED_TOOL_CALLS`, which a parser of the completion must be fed first). Raises `EncodingError` naming
    the message and field.
    """
    if thinking_mode not in THINKING_MODES:
        raise EncodingError(f"thinking_mode {thinking_mode!r} is not one of {THINKING_MODES}")
    if dialect not in DIALECTS:
        raise EncodingError(f"dialect {dialect!r} is not one of {DIALECTS}")
    ctx = check_messages(context or [])
    msgs = check_messages(messages, offset=len(ctx))
    check_tool_results(ctx + msgs)
    thinking = thinking_mode == "thinking"
    if dialect == "ga":
        return encode_ga(ctx, msgs, thinking=thinking, effort=reasoning_effort, add_bos=add_default_bos_token,
                         tool_choice=tool_choice)
    full, _ = apply_tool_choice(ctx + msgs, tool_choice, thinking=thinking, dialect=dialect)
    ctx, msgs = full[: len(ctx)], full[len(ctx):]
    return encode_preview(ctx, msgs, thinking=thinking, effort=reasoning_effort, drop_thinking_=drop_thinking,
                          add_bos=add_default_bos_token)

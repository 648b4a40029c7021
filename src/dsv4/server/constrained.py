"""The grammar a chat request's reply must follow: a forced tool call (`tool_choice` "required" or a named
function; Anthropic's `any` / `tool` arrive as these) or a JSON reply (`response_format` json_object /
json_schema), enforced by the engine token by token (`dsv4.engine.constraint`).

In thinking mode the model reasons freely and the call or JSON follows `</think>`. The reasoning is closed in
time: once only `reasoning_room(max_tokens)` = min(max_tokens // 2, 4096) tokens are left, the engine writes
`</think>` itself, and it finishes the call or JSON the shortest way when the tokens left come near its shortest
finish: a required call or a JSON reply is never cut off by the length limit (`finish_reason` "length" cannot
happen to it).

Strict tools (every offered function `"strict": true`, as deepseek-recipe requires them all or none) under
tool_choice "auto" leave the choice to call to the model, and once it opens a tool-call block every call follows
the tools' schemas; the engine finishes an open block within the length limit, never free text.

A `response_format` is enforced when no tool can be called instead (no tools, or `tool_choice` "none"); with
tools offered and `tool_choice` "auto" the model may call one, so the format is only in the prompt then.
"""

from dsv4.encoding import EncodingError
from dsv4.encoding.grammar import RAW_VALUE_OPEN, response_grammar, strict_tools_grammar, tool_call_grammar
from dsv4.encoding.tokens import DSML, EOS, PARAM_CLOSE, THINK_END, TOOL_CALLS_OPEN
from dsv4.encoding.tool_choice import forced_name
from dsv4.engine.constraint import grammar_error
from dsv4.engine.sampling_params import Grammar

from .backend import Backend
from .errors import RequestError
from .protocol import ChatCompletionRequest

REASONING_ROOM_MAX = 4096


def reasoning_room(max_tokens: int) -> int:
    """Tokens of max_tokens kept for a forced call or JSON reply after the reasoning."""
    return min(max_tokens // 2, REASONING_ROOM_MAX)


def single_tokens(backend: Backend) -> dict[str, int]:
    """The grammar's special texts that the tokenizer has as one token (spelled by id in the grammar)."""
    return {text: ids[0] for text in (THINK_END, EOS, DSML) if len(ids := backend.encode(text)) == 1}


def reply_grammar(request: ChatCompletionRequest, *, thinking: bool, backend: Backend,
                  max_tokens: int) -> Grammar | None:
    """The grammar of the request's reply (None: free); `RequestError` naming the field that cannot be enforced."""
    choice, tools = request.tool_choice, [t.get("function", t) for t in request.tools or []]
    end, room = (THINK_END, reasoning_room(max_tokens)) if thinking else (None, 0)
    try:
        if tools and (choice == "required" or forced_name(choice) is not None):
            lark = tool_call_grammar(tools, forced_name(choice), thinking=thinking,
                                     single_tokens=single_tokens(backend))
            grammar, where = Grammar(lark, end, room, ((RAW_VALUE_OPEN, PARAM_CLOSE),)), "tools"
        elif tools and choice in (None, "auto") and all(t.get("strict") for t in tools):
            lark = strict_tools_grammar(tools, thinking=thinking, single_tokens=single_tokens(backend))
            grammar = Grammar(lark, end, room, ((RAW_VALUE_OPEN, PARAM_CLOSE),), finish_from=TOOL_CALLS_OPEN)
            where = "tools"
        elif request.response_format and (not tools or choice == "none"):
            lark = response_grammar(request.response_format, thinking=thinking, single_tokens=single_tokens(backend))
            if lark is None:
                return None
            grammar, where = Grammar(lark, end, room), "response_format"
        else:
            return None
    except EncodingError as e:
        raise RequestError(str(e), param=e.field) from e
    if (error := grammar_error(grammar.lark)) is not None:
        raise RequestError(f"{where} cannot be enforced: {error}", param=where)
    return grammar

"""The `ga` dialect: DeepSeek's `deepseek-recipe` 0.2.0 rendering of DeepSeek-V4 (the released API format).

It differs from the preview file in: effort tiers low/high/max (default high); all system messages
hoisted to the front; `<｜Assistant｜>` opening every assistant turn; reasoning kept only when tools are
defined; a zero-argument invoke without the empty line; strict tool schemas normalized; JSON numbers read and
written as the recipe's serde_json does (`recipe_json`).
"""

from . import recipe_json
from .conversation import Msg
from .dsml import render_tool_calls
from .errors import EncodingError
from .ga_rules import check_ga
from .render_preview import render_user_blocks
from .templates import (
    EFFORT_ABSOLUTE_MAXIMUM,
    EFFORT_BEYOND_MAXIMUM,
    RESPONSE_JSON_OBJECT,
    RESPONSE_SCHEMA_TEMPLATE,
    render_tools,
)
from .tokens import (
    ASSISTANT,
    BOS,
    EOS,
    LATEST_REMINDER,
    THINK_END,
    THINK_START,
)
from .tool_choice import apply_tool_choice

# Request names of the public API -> rendered tier; "none" turns thinking off.
EFFORT_TIERS = {"minimal": "low", "low": "low", "medium": "high", "high": "high", "xhigh": "high",
                "max": "max", "ultra": "max"}
EFFORT_PREFIX = {"low": "", "high": EFFORT_ABSOLUTE_MAXIMUM, "max": EFFORT_BEYOND_MAXIMUM}


def resolve_effort(effort: str | None, thinking: bool) -> tuple[bool, str]:
    """(thinking on?, effort prefix text) for a request's `reasoning_effort`."""
    if effort == "none":
        return False, ""
    if effort is not None and effort not in EFFORT_TIERS:
        raise EncodingError(f"reasoning_effort {effort!r} is not one of none, {', '.join(EFFORT_TIERS)}")
    return thinking, EFFORT_PREFIX[EFFORT_TIERS[effort or "high"]] if thinking else ""


def strict_schema(schema, where: str):
    """OpenAI strict mode as the recipe applies it: every object schema lists all its properties as required
    and forbids others. (The recipe's full strict-schema validation has more rules than these.)"""
    if isinstance(schema, list):
        return [strict_schema(s, f"{where}[{i}]") for i, s in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v, f"{where}.{k}") for k, v in schema.items()
           if k not in ("required", "additionalProperties")}
    if schema.get("type") != "object":
        return out
    props = out.setdefault("properties", {})
    if schema.get("additionalProperties") is True:
        raise EncodingError("additionalProperties cannot be true in a strict tool", field=where)
    if "required" in schema and set(schema["required"]) != set(props):
        raise EncodingError("a strict tool must require all its properties", field=f"{where}.required")
    out["additionalProperties"] = False
    out["required"] = list(props)
    return out


def recipe_value(value, *, field: str, index: int | None = None):
    """`value` as deepseek-recipe reads it when sent as JSON; EncodingError naming `field` for what it refuses."""
    try:
        return recipe_json.read(value)
    except (TypeError, ValueError) as e:
        raise EncodingError(str(e), index=index, field=field) from None


def read_arguments(msgs: list[Msg]) -> None:
    """Every call's arguments as the recipe reads them, from their JSON text where given (`-0`, big integers)."""
    for i, m in enumerate(msgs):
        for k, c in enumerate(m.calls):
            try:
                c.arguments = recipe_json.loads(c.source) if c.source is not None else recipe_json.read(c.arguments)
            except (TypeError, ValueError) as e:
                raise EncodingError(str(e), index=i, field=f"tool_calls[{k}].function.arguments") from None


def normalize_tool(fn: dict) -> dict:
    params = recipe_value(fn.get("parameters") or {}, field=f"tools[{fn['name']}].parameters")
    if fn.get("strict"):
        params = strict_schema(params, f"tools[{fn['name']}].parameters")
    return {"name": fn["name"], "description": fn.get("description") or "", "parameters": params}


def response_format_text(rf: dict, index: int) -> str:
    kind = rf.get("type")
    if kind == "json_schema":
        schema = recipe_value((rf.get("json_schema") or {}).get("schema", {}), index=index,
                              field="response_format.json_schema.schema")
        return RESPONSE_SCHEMA_TEMPLATE.format(schema=recipe_json.dumps(schema))
    if kind == "json_object":
        return RESPONSE_JSON_OBJECT
    if kind == "text":
        return ""
    raise EncodingError(f"unsupported type {kind!r} (expected text, json_object or json_schema)",
                        index=index, field="response_format.type")


def render_header(msgs: list[Msg], effort_prefix: str) -> str:
    """Effort prefix, then every system text, the tools block and the response-format block."""
    systems = [(i, m) for i, m in enumerate(msgs) if m.role == "system"]
    text = effort_prefix + "\n\n".join(m.content for _, m in systems if m.content)
    tools = [normalize_tool(fn) for _, m in systems for fn in (m.tools or [])]
    if tools:
        text += "\n\n" + render_tools(tools, recipe_json.dumps)
    formats = [(i, m.response_format) for i, m in systems if m.response_format]
    if formats and (rf_text := response_format_text(formats[-1][1], formats[-1][0])):
        text += "\n\n" + rf_text
    return text


def user_turns(msgs: list[Msg]) -> list[Msg]:
    """Merge consecutive user and tool messages into one user turn (systems were hoisted out)."""
    turns: list[Msg] = []
    for m in msgs:
        if m.role == "system":
            continue
        if m.role not in ("user", "tool"):
            turns.append(m)
            continue
        block = ("text", m.content, "") if m.role == "user" else ("tool_result", m.content, m.call_id or "")
        if not (turns and turns[-1].blocks is not None):
            turns.append(Msg("user", blocks=[]))
        blocks = turns[-1].blocks
        if block[0] == "text" and blocks and blocks[-1][0] == "text":
            # Consecutive user texts become one text, empty ones left out (as the recipe merges them).
            blocks[-1] = ("text", "\n\n".join(t for t in (blocks[-1][1], block[1]) if t), "")
        else:
            blocks.append(block)
        if block[0] == "tool_result":
            sort_results(turns[-1])
    return turns


def sort_results(turn: Msg) -> None:
    """deepseek-recipe 0.2.0 orders a turn's tool results by tool_call_id as a string (as it orders the calls),
    not by the listed call order of the preview file: `call_10` comes before `call_9`. Reproduced, not corrected."""
    ranked = iter(sorted((b for b in turn.blocks if b[0] == "tool_result"), key=lambda b: b[2]))
    turn.blocks = [next(ranked) if b[0] == "tool_result" else b for b in turn.blocks]


def render_assistant(m: Msg, thinking: bool, keep_reasoning: bool) -> str:
    if m.prefix:  # an unfinished turn: reasoning stays open until content starts
        if not thinking:
            return ASSISTANT + THINK_END + m.content
        return ASSISTANT + THINK_START + (m.reasoning or "") + (THINK_END + m.content if m.content else "")
    think = THINK_START + (m.reasoning or "") + THINK_END if thinking and keep_reasoning else THINK_END
    # deepseek-recipe 0.2.0 keys calls by id: they render in id order, not as listed. Reproduced, not corrected.
    ordered = sorted(m.calls, key=lambda c: c.id)
    calls = [(c.name, c.arguments) for c in ordered]
    block = render_tool_calls(calls, empty_line=False, dumps=recipe_json.dumps) if calls else ""
    return ASSISTANT + think + m.content + block + EOS


def render_turn(m: Msg, thinking: bool, keep_reasoning: bool) -> str:
    if m.blocks is not None:
        return render_user_blocks(m.blocks)
    if m.role == "latest_reminder":
        return LATEST_REMINDER + m.content
    return render_assistant(m, thinking, keep_reasoning)


def render_body(msgs: list[Msg], thinking: bool, effort_prefix: str) -> str:
    """Everything but the BOS and the closing generation header."""
    keep = any(m.tools for m in msgs if m.role == "system")
    turns = user_turns(msgs)
    return render_header(msgs, effort_prefix) + "".join(render_turn(t, thinking, keep) for t in turns)


def generation_header(msgs: list[Msg], thinking: bool) -> str:
    if msgs and msgs[-1].prefix:
        return ""
    return ASSISTANT + (THINK_START if thinking else THINK_END)


def encode_ga(context: list[Msg], msgs: list[Msg], *, thinking: bool, effort: str | None, add_bos: bool,
              tool_choice=None) -> str:
    thinking, effort_prefix = resolve_effort(effort, thinking)
    if tool_choice != "none":  # "none" drops the tools unchecked; otherwise all are checked, even filtered ones
        for fn in (fn for m in context + msgs for fn in m.tools or []):
            normalize_tool(fn)
    full, forced = apply_tool_choice(context + msgs, tool_choice, thinking=thinking, dialect="ga")
    context, msgs = full[: len(context)], full[len(context):]
    check_ga(full)
    read_arguments(full)
    text = render_body(full, thinking, effort_prefix) + generation_header(full, thinking) + forced
    if not context:
        return (BOS if add_bos else "") + text
    # Context is already in the KV cache: emit only what follows its rendering.
    done = render_body(context, thinking, effort_prefix)
    if not text.startswith(done):
        raise EncodingError("the context renders differently once these messages follow it (system messages,"
                            " tools or reasoning retention changed); render the whole conversation instead")
    return text[len(done):]

"""Grammars of constrained decoding, in llguidance's Lark dialect: a JSON reply (`response_format`) and a forced DSML
tool call (`tool_choice` required / named), spelled byte for byte as `dsml.py` renders a call.

A grammar covers the whole completion after the generation header: in thinking mode free reasoning (no DSML
marker in it), `</think>`, then the constrained part; it ends with the EOS token. A forced call in thinking-off
mode starts inside the block, since the prompt already ends with `\\n\\n<｜DSML｜tool_calls>\\n`
(`FORCED_TOOL_CALLS`).

Parameters follow each tool's JSON schema in DSML form: a plain string property is `string="true"` raw text (any
text up to the first `</｜DSML｜parameter>`, which is what every DSML parser reads), a string enum one of its values
raw, anything else (numbers, booleans, arrays, objects, unions, constrained strings) `string="false"` JSON that
follows the property's schema. Properties come in the schema's order, the required ones always, the others
optionally, no undeclared ones. JSON is written as DeepSeek's encoders write it (`", "` and `": "`, no other
whitespace), so the constrained text is the text the model was trained on.

Special tokens are spelled by id (`<[id]>`) where the tokenizer has the text as one token: llguidance never lets a
special token's text be written in pieces, and the engine must force the token the model was trained on.
"""

import json
import re
from collections.abc import Mapping

from .errors import EncodingError
from .render_ga import strict_schema
from .tokens import (
    DSML,
    EOS,
    INVOKE_CLOSE,
    INVOKE_OPEN,
    PARAM_CLOSE,
    PARAM_OPEN,
    THINK_END,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_LEAD,
)

# How DeepSeek's encoders write JSON (json.dumps defaults): the only whitespace a constrained JSON value gets.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# What opens a raw string value; the engine closes an open one with PARAM_CLOSE when the length limit nears.
RAW_VALUE_OPEN = ' string="true">'

# Schema keys that leave a string property plain text (annotations, not constraints).
ANNOTATIONS = {"type", "description", "title", "default", "examples", "$comment", "deprecated"}


def lark_literal(text: str) -> str:
    """A Lark string literal for `text` (JSON's escapes, which Lark reads the same way)."""
    return json.dumps(text, ensure_ascii=False)


def json_rule(schema) -> str:
    """`%json` of a JSON schema (a bool or an object), in DeepSeek's JSON style."""
    if schema is True or schema == {}:
        schema = {}
    elif not isinstance(schema, dict):
        raise EncodingError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    return "%json " + json.dumps({**schema, "x-guidance": JSON_STYLE}, ensure_ascii=False)


class Spelling:
    """Lark atoms for texts: a special token by id where the tokenizer has it as one token, else a literal."""

    def __init__(self, single_tokens: Mapping[str, int]):
        self.single_tokens = dict(single_tokens)

    def __call__(self, text: str) -> str:
        """`text` as a sequence of literals and token ids: each special text in it that is one token by id."""
        specials = [t for t in self.single_tokens if t]
        if not specials:
            return lark_literal(text)
        pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", text)
        return " ".join(f"<[{self.single_tokens[p]}]>" if p in self.single_tokens else lark_literal(p)
                        for p in pieces if p)


def reasoning_rules(spell: Spelling) -> list[str]:
    """Free reasoning (anything without a DSML marker: every parser takes one as the start of a call) and its end."""
    return [f"reasoning: REASONING {spell(THINK_END)}", f"REASONING: /(?s:.*)/ & ~/(?s:.*){DSML}(?s:.*)/"]


def response_grammar(response_format: dict, *, thinking: bool, single_tokens: Mapping[str, int]) -> str | None:
    """The grammar of a reply in `response_format` (None for type "text": nothing to enforce)."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = {"type": "object"}
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema", {})
    else:
        raise EncodingError(f"unsupported type {kind!r} (expected text, json_object or json_schema)",
                            field="response_format.type")
    spell = Spelling(single_tokens)
    head = "reasoning " if thinking else ""
    rules = [f"start: {head}reply {spell(EOS)}", f"reply: {json_rule(schema)}"]
    return "\n".join(rules + (reasoning_rules(spell) if thinking else [])) + "\n"


def plain_string(schema) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "string" and set(schema) <= ANNOTATIONS


def string_enum(schema) -> bool:
    return (isinstance(schema, dict) and schema.get("type") == "string" and set(schema) <= ANNOTATIONS | {"enum"}
            and isinstance(schema.get("enum"), list) and bool(schema["enum"])
            and all(isinstance(v, str) for v in schema["enum"]))


def text_branch(schema) -> tuple[dict, list] | None:
    """An `anyOf` with a plain-string or string-enum member (a strict tool's optional string: `[string, null]`) ->
    (that member, the other members); None otherwise. Its string values are written raw (`string="true"`), as for
    any string, the others as JSON."""
    if not isinstance(schema, dict) or not isinstance(schema.get("anyOf"), list) or \
            not set(schema) <= ANNOTATIONS - {"type"} | {"anyOf"}:
        return None
    text = next((m for m in schema["anyOf"] if plain_string(m) or string_enum(m)), None)
    return None if text is None else (text, [m for m in schema["anyOf"] if m is not text])


def parameter_rule(name: str, schema, rules: list[str], spell: Spelling) -> str:
    """One parameter element, its closing tag included (a JSON value's own rule added to `rules`)."""
    head = f'{PARAM_OPEN} name="{name}"'
    if (split := text_branch(schema)) is not None:
        text, rest = split
        as_text = parameter_rule(name, text, rules, spell)
        if not rest:
            return as_text
        return f"({as_text} | {parameter_rule(name, rest[0] if len(rest) == 1 else {'anyOf': rest}, rules, spell)})"
    if plain_string(schema):
        return f"{spell(head + RAW_VALUE_OPEN)} raw_value"
    if string_enum(schema):
        values = " | ".join(lark_literal(v) for v in schema["enum"])
        return f"{spell(head + RAW_VALUE_OPEN)} ({values}) {spell(PARAM_CLOSE)}"
    value = f"json_{len(rules)}"
    rules.append(f"{value}: {json_rule(schema)}")
    return f"{spell(head + ' string=' + chr(34) + 'false' + chr(34) + '>')} {value} {spell(PARAM_CLOSE)}"


def invoke_rule(tool: dict, rules: list[str], spell: Spelling) -> str:
    """An invoke of `tool` (an OpenAI function object) whose parameters follow its schema."""
    name = tool.get("name")
    params = tool.get("parameters") or {}
    if not isinstance(params, dict):
        raise EncodingError(f"tool {name!r}: parameters must be a JSON schema object", field="tools")
    required = set(params.get("required") or ())
    parts = [spell(f'{INVOKE_OPEN} name="{name}">\n')]
    for key, schema in (params.get("properties") or {}).items():
        line = f'{parameter_rule(key, schema, rules, spell)} "\\n"'
        parts.append(line if key in required else f"({line})?")
    parts.append(spell(INVOKE_CLOSE))
    return " ".join(parts)


def raw_value_rules(spell: Spelling) -> list[str]:
    """A raw string value and its closing tag: any text without a DSML marker (every parser ends the value at the
    first closing tag, and DeepSeek's streaming parser takes any `<｜DSML｜` as markup)."""
    if DSML in spell.single_tokens:  # the marker is a token: the value's text ends with "</", then the token
        return [f"raw_value: RAW_VALUE {spell(PARAM_CLOSE[2:])}",
                f"RAW_VALUE: /(?s:.*)<\\// & ~/(?s:.*){DSML}(?s:.*)/"]
    # lazy: the value ends at the first closing tag (the regex includes it)
    return [f"raw_value[lazy]: /(?s:.*){PARAM_CLOSE.replace('/', chr(92) + '/')}/"]


def invoke_rules(offered: list[dict], spell: Spelling) -> list[str]:
    """`invoke`: a call of any of `offered`, each tool's parameters following its schema."""
    rules = ["invoke: " + " | ".join(f"invoke_{i}" for i in range(len(offered)))]
    values: list[str] = []
    rules += [f"invoke_{i}: {invoke_rule(t, values, spell)}" for i, t in enumerate(offered)]
    return rules + values + raw_value_rules(spell)


def tool_call_grammar(tools: list[dict], name: str | None, *, thinking: bool,
                      single_tokens: Mapping[str, int]) -> str:
    """The grammar of a forced tool call: one call of `name`, or one or more calls of any of `tools` (OpenAI
    function objects) when `name` is None (tool_choice "required")."""
    spell = Spelling(single_tokens)
    offered = [t for t in tools if name is None or t.get("name") == name]
    if not offered:
        raise EncodingError(f"tool_choice names {name!r}, which is not among the tools "
                            f"{[t.get('name') for t in tools]}", field="tool_choice")
    invokes = 'invoke "\\n"' if name is not None else '(invoke "\\n")+'
    opener = f"reasoning {spell(TOOL_CALLS_LEAD + chr(10))} " if thinking else ""
    rules = [f"start: {opener}{invokes} {spell(TOOL_CALLS_CLOSE)} {spell(EOS)}"] + invoke_rules(offered, spell)
    return "\n".join(rules + (reasoning_rules(spell) if thinking else [])) + "\n"


def strict_tools_grammar(tools: list[dict], *, thinking: bool, single_tokens: Mapping[str, int]) -> str:
    """The grammar of a reply that may call strict tools (OpenAI's `"strict": true` functions under tool_choice
    "auto"): free content (no DSML marker in it), or content and then one or more calls that follow the tools'
    schemas, as `tool_call_grammar` spells them. Whether to call stays the model's choice; once it opens the block,
    every call it writes is valid (vLLM's structural tag does the same for strict tools). Each tool's parameters
    are read as the prompt renders a strict tool's (`strict_schema`: every property required, no others)."""
    tools = [{**t, "parameters": strict_schema(t.get("parameters") or {}, f"tools[{t.get('name')}].parameters")}
             for t in tools]
    spell = Spelling(single_tokens)
    head = "reasoning " if thinking else ""
    no_marker = f"~/(?s:.*){DSML}(?s:.*)/"
    if DSML in spell.single_tokens:  # the content before the block ends with its "\n\n<", then the marker token
        lead = [f"calls_lead: CALLS_LEAD {spell(TOOL_CALLS_LEAD[3:] + chr(10))}",
                f"CALLS_LEAD: /(?s:.*)\\n\\n</ & {no_marker}"]
    else:  # lazy: the content ends at the first block opener (the regex includes it)
        lead = [f"calls_lead[lazy]: /(?s:.*)\\n\\n<{DSML}tool_calls>\\n/"]
    rules = [f"start: {head}reply {spell(EOS)}", "reply: CONTENT | calls",
             f'calls: calls_lead (invoke "\\n")+ {spell(TOOL_CALLS_CLOSE)}', f"CONTENT: /(?s:.*)/ & {no_marker}"]
    rules += lead + invoke_rules(tools, spell)
    return "\n".join(rules + (reasoning_rules(spell) if thinking else [])) + "\n"

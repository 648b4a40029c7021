"""Fixed texts of the V4 prompt: the tools block, response-format blocks and reasoning-effort prefixes."""

import json
from collections.abc import Callable

from .tokens import DSML, THINK_END, THINK_START

TOOLS_TEMPLATE = f"""## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{DSML}tool_calls>" block like the following:

<{DSML}tool_calls>
<{DSML}invoke name="$TOOL_NAME">
<{DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML}parameter>
...
</{DSML}invoke>
<{DSML}invoke name="$TOOL_NAME2">
...
</{DSML}invoke>
</{DSML}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {THINK_START}), you MUST output your complete reasoning inside {THINK_START}...{THINK_END} BEFORE any tool calls or final response.

Otherwise, output directly after {THINK_END} with tool calls or final response.

### Available Tool Schemas

{{tool_schemas}}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""

RESPONSE_SCHEMA_TEMPLATE = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}"
)
# deepseek-recipe's text for `response_format: {"type": "json_object"}` (no schema to show).
RESPONSE_JSON_OBJECT = (
    "You are a helpful assistant designed to output JSON.\n## Response Format:\n\nReply with JSON object ONLY."
)

EFFORT_ABSOLUTE_MAXIMUM = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root"
    " cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial"
    " scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered"
    " alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n"
)
EFFORT_BEYOND_MAXIMUM = (
    "Reasoning Effort: Beyond maximum \u2014 exhaustive, relentless, and uncompromising.\n"
    "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: exhaustively"
    " decompose the problem into its most fundamental components, trace every causal chain to its root, and"
    " resolve the underlying cause rather than any surface symptom.\n"
    "Do not stop reasoning until you have independently verified the solution from multiple angles and are"
    " certain that no assumption remains unchecked and no error remains undiscovered.\n\n"
)


def to_json(value) -> str:
    """JSON as DeepSeek's encoders write it: default separators, key order kept, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def render_tools(functions: list[dict], dumps: Callable = to_json) -> str:
    """The TOOLS block for OpenAI function objects (the `function` part of each tool), each written by `dumps`."""
    return TOOLS_TEMPLATE.replace("{tool_schemas}", "\n".join(dumps(f) for f in functions))

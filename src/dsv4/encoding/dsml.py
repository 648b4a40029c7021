"""Rendering assistant tool calls as a DSML `tool_calls` block."""

from collections.abc import Callable

from .templates import to_json
from .tokens import INVOKE_CLOSE, INVOKE_OPEN, PARAM_CLOSE, PARAM_OPEN, TOOL_CALLS_CLOSE, TOOL_CALLS_OPEN


def render_parameters(arguments: dict, dumps: Callable = to_json) -> str:
    """One DSML parameter per key: strings raw with `string="true"`, anything else as JSON written by `dumps`
    (Python's json for the preview dialect, the recipe's number formatting for ga)."""
    lines = []
    for key, value in arguments.items():
        if isinstance(value, str):
            lines.append(f'{PARAM_OPEN} name="{key}" string="true">{value}{PARAM_CLOSE}')
        else:
            lines.append(f'{PARAM_OPEN} name="{key}" string="false">{dumps(value)}{PARAM_CLOSE}')
    return "\n".join(lines)


def render_invoke(name: str, arguments: dict, *, empty_line: bool, dumps: Callable = to_json) -> str:
    """An `invoke` element. A call without arguments keeps an empty line in the preview dialect only."""
    params = render_parameters(arguments, dumps)
    if not params and not empty_line:
        return f'{INVOKE_OPEN} name="{name}">\n{INVOKE_CLOSE}'
    return f'{INVOKE_OPEN} name="{name}">\n{params}\n{INVOKE_CLOSE}'


def render_tool_calls(calls: list[tuple[str, dict]], *, empty_line: bool, dumps: Callable = to_json) -> str:
    """The block that follows assistant content: `\\n\\n<｜DSML｜tool_calls>\\n...\\n</｜DSML｜tool_calls>`."""
    invokes = "\n".join(render_invoke(name, args, empty_line=empty_line, dumps=dumps) for name, args in calls)
    return f"\n\n{TOOL_CALLS_OPEN}\n{invokes}\n{TOOL_CALLS_CLOSE}"

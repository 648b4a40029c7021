"""DeepSeek's `deepseek-recipe` 0.2.0 as a rendering oracle for dsv4's `ga` dialect.

dsv4 takes tools and response_format on a system message (the DeepSeek reference layout); the recipe takes
them on the request. This module moves them and renders through the recipe's own conversion.
"""

import json

import deepseek_recipe as dr


def recipe_request(messages: list[dict], *, thinking_mode: str = "thinking",
                   reasoning_effort: str | None = None, tool_choice=None) -> dict:
    body: dict = {"model": "DeepSeek-V4-Pro", "messages": []}
    for m in messages:
        m = dict(m)
        if m.get("tools"):
            body.setdefault("tools", []).extend(m.pop("tools"))
        if m.get("response_format"):
            body["response_format"] = m.pop("response_format")
        if m.pop("wo_eos", False):
            m["prefix"] = True
        if m.get("tool_calls"):
            m["tool_calls"] = [_string_arguments(tc) for tc in m["tool_calls"]]
        body["messages"].append(m)
    # dsv4's thinking_mode="thinking" is the default (on unless reasoning_effort="none"), as an absent field is.
    if thinking_mode == "chat":
        body["thinking"] = {"type": "disabled"}
    if reasoning_effort is not None:
        body["reasoning_effort"] = reasoning_effort
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    return body


def _string_arguments(tc: dict) -> dict:
    fn = dict(tc["function"])
    if not isinstance(fn["arguments"], str):
        fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)
    return {**tc, "function": fn}


def recipe_render(messages: list[dict], **kw) -> str:
    """The prompt deepseek-recipe renders; raises the recipe's own errors for requests it rejects."""
    body = recipe_request(messages, **kw)
    req = dr.ChatCompletionRequest(json.dumps(body, ensure_ascii=False)).convert(dr.ConversionOptions())
    return dr.DeepseekV4Encoding().render_conversation(req.conversation).prompt

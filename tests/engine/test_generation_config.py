"""A checkpoint's generation_config.json: the sampling defaults an engine and its server take from it."""

import json
import shutil

import pytest

from dsv4.checkpoints import builtin
from dsv4.engine import Engine, EngineConfig
from dsv4.engine.generation_config import sampling_defaults


def _with(tmp_path, content) -> str:
    (tmp_path / "generation_config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return str(tmp_path)


def test_fields_read_as_transformers_and_vllm_read_them(tmp_path):
    assert sampling_defaults(tmp_path) == {}  # no file
    assert sampling_defaults("v4-tiny") == {}  # a preset
    assert sampling_defaults(_with(tmp_path, {"temperature": 0.6, "top_p": 0.95, "bos_token_id": 0})) \
        == {"temperature": 0.6, "top_p": 0.95}
    # do_sample false is greedy decoding whatever the temperature says; null fields are unset
    assert sampling_defaults(_with(tmp_path, {"do_sample": False, "temperature": 0.6})) == {"temperature": 0.0}
    assert sampling_defaults(_with(tmp_path, {"do_sample": True, "top_k": 20, "top_p": None})) == {"top_k": 20}


@pytest.mark.parametrize("content, says", [("{not json", "not readable JSON"), ("[1, 2]", "JSON object"),
                                           ({"temperature": -1}, "temperature must be >= 0"),
                                           ({"top_p": 0}, "top_p must be in")])
def test_a_bad_file_is_refused_naming_it(tmp_path, content, says):
    with pytest.raises(ValueError, match=says) as e:
        sampling_defaults(_with(tmp_path, content))
    assert "generation_config.json" in str(e.value)


def test_an_engine_from_a_checkpoint_carries_them(tiny_dir, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, copy)
    assert Engine.from_pretrained(copy, EngineConfig(num_blocks=8)).sampling_defaults == {}
    _with(copy, {"do_sample": False})
    assert Engine.from_pretrained(copy, EngineConfig(num_blocks=8)).sampling_defaults == {"temperature": 0.0}


def test_the_builtin_model_is_greedy_by_default():
    # it is measured greedy; sampled at temperature 1 it misspells what it copies (make run failed at random)
    assert sampling_defaults(builtin()) == {"temperature": 0.0}

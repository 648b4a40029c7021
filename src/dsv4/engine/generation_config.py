"""A checkpoint's own sampling defaults: its `generation_config.json` (transformers' file, which vLLM and SGLang
also read), applied to a request that names no temperature, top_p or top_k.

Without it a server samples at temperature 1, which suits a large model but not every checkpoint: the built-in
4M-parameter model is measured greedy, and sampled at 1 it misspells the names it copies from tool results, so its
`make run` episode failed at random (one CI run in a few). It ships `{"do_sample": false}`.
"""

import json
from pathlib import Path

from .sampling_params import SamplingParams

FILE = "generation_config.json"
FIELDS = ("temperature", "top_p", "top_k")


def sampling_defaults(path_or_preset: str | Path) -> dict:
    """{field: value} for the fields of FIELDS the checkpoint sets (empty for a preset or a checkpoint without the
    file). `do_sample: false` means greedy whatever its temperature says, as transformers reads it. ValueError
    naming the file for one that is not a JSON object or holds a value SamplingParams refuses."""
    file = Path(path_or_preset) / FILE
    if not file.is_file():
        return {}
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file} is not readable JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object; got {type(raw).__name__}")
    if raw.get("do_sample") is False:
        return {"temperature": 0.0}
    defaults = {k: raw[k] for k in FIELDS if raw.get(k) is not None}
    try:
        SamplingParams(**defaults)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file}: {e}") from e
    return defaults

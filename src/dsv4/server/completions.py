"""The legacy text completion (`POST /v1/completions`): a raw prompt (text or token ids) continued as is, with no
chat template and no parsing; for evaluation harnesses and clients that render prompts themselves."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

from dsv4.engine import OutputAccumulator, RequestDelta, SamplingParams, TokenLogprob

from .backend import Backend
from .errors import RequestError
from .prompt_bound import check_prompt_size
from .protocol import CompletionRequest
from .sampling import sampling_params
from .streaming import with_totals


@dataclass
class CompletionJob:
    request: CompletionRequest
    prompt_ids: list[int]
    params: SamplingParams


def prepare_completion(request: CompletionRequest, backend: Backend, *, default_max_tokens: int) -> CompletionJob:
    if isinstance(request.prompt, str):
        check_prompt_size(request.prompt, backend, "prompt")
    try:
        ids = backend.encode(request.prompt)
    except ValueError as e:  # token ids outside the vocabulary
        raise RequestError(str(e), param="prompt") from e
    params = sampling_params(request, len(ids), backend, default_max_tokens=default_max_tokens, where="prompt")
    return CompletionJob(request, ids, params)


def text_steps(job: CompletionJob, backend: Backend) -> AsyncIterator[tuple[RequestDelta, OutputAccumulator]]:
    """(delta, the totals so far) after each step that gave the request tokens."""
    return with_totals(backend.stream(job.prompt_ids, job.params), job.prompt_ids)


def legacy_logprobs(logprobs: list[TokenLogprob], token_bytes, offset: int) -> dict:
    """OpenAI's completions form: tokens, their logprobs, the top alternatives, character offsets from `offset`."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for lp in logprobs:
        text = token_bytes(lp.token_id).decode("utf-8", errors="replace")
        out["tokens"].append(text)
        out["token_logprobs"].append(lp.logprob)
        out["top_logprobs"].append({token_bytes(t).decode("utf-8", errors="replace"): v for t, v in lp.top.items()})
        out["text_offset"].append(offset)
        offset += len(text)
    return out

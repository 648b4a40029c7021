"""A request's sampling fields -> the engine's `SamplingParams`, within what the context leaves for the reply."""

from dsv4.engine import SamplingParams

from .backend import Backend
from .errors import RequestError
from .protocol import SamplingFields


def sampling_params(request: SamplingFields, n_prompt: int, backend: Backend, *, default_max_tokens: int,
                    where: str) -> SamplingParams:
    """`n_prompt`: the prompt's tokens; `where`: what holds them (named in a context-length error)."""
    room = backend.max_model_len - n_prompt
    limit = request.token_limit
    if room <= 0 or (limit is not None and limit > room):
        asked = f"; you asked for {n_prompt} in the {where} and {limit} in the completion" if limit else ""
        raise RequestError(f"this model's maximum context length is {backend.max_model_len} tokens; the {where} "
                           f"take {n_prompt}{asked}", code="context_length_exceeded", param=where)
    # what the request leaves out: the checkpoint's generation_config.json, else temperature 1, all tokens
    defaults = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, **backend.sampling_defaults}
    top_k = defaults["top_k"] if request.top_k is None else max(request.top_k, 0)
    try:
        return SamplingParams(
            temperature=defaults["temperature"] if request.temperature is None else request.temperature,
            top_p=defaults["top_p"] if request.top_p is None else request.top_p, top_k=top_k, seed=request.seed,
            max_tokens=limit or min(default_max_tokens, room), stop=request.stop_strings(),
            ignore_eos=request.ignore_eos, logprobs=request.n_logprobs)
    except ValueError as e:
        raise RequestError(str(e)) from e

"""One chat completion: request -> prompt and sampling parameters -> the engine's text, parsed as it streams ->
OpenAI deltas (streaming) or one message.

The completion text goes through `dsv4.encoding.StreamParser` as it forms, so reasoning, content and DSML tool
calls are separated the same way whether the client streams or not (the parser's events fold to exactly the
message `parse_completion(strict=False)` gives). Malformed DSML never fails a request: the tolerant parser keeps
the text and records what it recovered from (logged).
"""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from dsv4.encoding import (
    FORCED_TOOL_CALLS,
    ArgumentsDelta,
    ContentDelta,
    EncodingError,
    Event,
    ParseWarning,
    ReasoningDelta,
    StreamParser,
    ToolCallStart,
    encode_request,
    fold_events,
)
from dsv4.encoding.request import thinking_mode_of
from dsv4.engine import RequestOutput, SamplingParams, TokenLogprob

from .backend import Backend
from .constrained import reply_grammar
from .control_tokens import neutralised
from .error_paths import Locate, chat_location, located_error
from .prompt_bound import check_prompt_size
from .protocol import ChatCompletionRequest
from .sampling import sampling_params
from .streaming import text_deltas
from .surrogates import without_lone_surrogates

log = logging.getLogger("dsv4.server")


@dataclass
class ChatJob:
    """A validated request, ready to run."""

    request: ChatCompletionRequest
    prompt_ids: list[int]
    params: SamplingParams
    thinking_mode: str
    forced_tool_call: bool  # the prompt ends inside an opened tool-call block (a forced tool_choice)


def prepare(request: ChatCompletionRequest, backend: Backend, *, dialect: str = "ga",
            default_max_tokens: int = 32768, locate: Locate = chat_location) -> ChatJob:
    """Renders and tokenizes the prompt and checks the limits; raises `RequestError` naming what is wrong (where
    the client's body has it: `locate`, for a request translated from another API's)."""
    body = neutralised(request.encoder_request(), backend)
    try:
        # arguments are JSON text: a surrogate escaped in them is only decoded now
        prompt = without_lone_surrogates(encode_request(body, dialect=dialect))
    except EncodingError as e:
        raise located_error(e, body, locate) from e
    check_prompt_size(prompt, backend, "messages")
    ids = backend.encode(prompt)
    params = sampling_params(request, len(ids), backend, default_max_tokens=default_max_tokens, where="messages")
    mode = thinking_mode_of(body)
    grammar = reply_grammar(request, thinking=mode == "thinking", backend=backend, max_tokens=params.max_tokens)
    if grammar is not None:
        params = replace(params, grammar=grammar)
    return ChatJob(request, ids, params, mode, prompt.endswith(FORCED_TOOL_CALLS))


@dataclass
class Step:
    """What one engine step added to a completion: parser events, the new tokens' logprobs, and the output."""

    events: list[Event]
    logprobs: list[TokenLogprob]
    output: RequestOutput


@dataclass
class ChatRun:
    """Runs a job on a backend, parsing the text as it grows."""

    job: ChatJob
    backend: Backend
    events: list[Event] = field(default_factory=list)
    output: RequestOutput | None = None

    async def steps(self) -> AsyncIterator[Step]:
        job = self.job
        parser = StreamParser(thinking_mode=job.thinking_mode, tools=job.request.tools)
        pending = parser.feed(FORCED_TOOL_CALLS) if job.forced_tool_call else []
        async for delta, logprobs, out in text_deltas(self.backend.stream(job.prompt_ids, job.params)):
            events = pending + parser.feed(delta) + (parser.finish() if out.finished else [])
            pending = []
            self.events += events
            self.output = out
            yield Step(events, logprobs, out)

    def message(self):
        message = fold_events(self.events, thinking_mode=self.job.thinking_mode)
        for warning in message.warnings:
            log.warning("completion parsed with recovery: %s", warning)
        return message

    def finish_reason(self) -> str:
        reason = self.output.finish_reason if self.output is not None else None
        if reason == "length":
            return "length"
        if any(isinstance(e, ToolCallStart) for e in self.events):
            return "tool_calls"
        return "stop"


def delta_chunks(events: list[Event]) -> list[dict]:
    """Parser events -> OpenAI deltas, runs of the same kind merged (one delta per run)."""
    deltas: list[dict] = []
    for ev in events:
        last = deltas[-1] if deltas else None
        if isinstance(ev, ReasoningDelta | ContentDelta):
            key = "reasoning_content" if isinstance(ev, ReasoningDelta) else "content"
            if last is not None and set(last) == {key}:
                last[key] += ev.text
            else:
                deltas.append({key: ev.text})
        elif isinstance(ev, ToolCallStart):
            deltas.append({"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function",
                                           "function": {"name": ev.name, "arguments": ""}}]})
        elif isinstance(ev, ArgumentsDelta):
            call = last["tool_calls"][0] if last is not None and set(last) == {"tool_calls"} else None
            if call is not None and call["index"] == ev.index:
                call["function"]["arguments"] += ev.text
            else:
                deltas.append({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.text}}]})
        elif isinstance(ev, ParseWarning):
            log.warning("completion parsed with recovery: %s", ev.message)
    return deltas


def logprobs_content(logprobs: list[TokenLogprob], token_bytes) -> list[dict]:
    """The engine's logprobs in OpenAI's form (token text, its bytes, the top alternatives)."""

    def entry(token_id: int, logprob: float) -> dict:
        raw = token_bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return [{**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top.items()]}
            for lp in logprobs]

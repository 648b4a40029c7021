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
from dsv4.encoding.salvage import Salvage, salvage_tool_calls
from dsv4.engine import OutputAccumulator, SamplingParams, TokenLogprob

from .backend import Backend
from .constrained import reply_grammar
from .control_tokens import neutralised
from .error_paths import Locate, chat_location, located_error
from .errors import RequestError
from .prompt_bound import check_prompt_size
from .protocol import ChatCompletionRequest
from .reasoning_store import Conversation, ReasoningStore
from .sampling import sampling_params
from .streaming import with_totals
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
    salvage: bool = False  # tool calls written as text in the content come back as calls (`encoding.salvage`)
    restored: int = 0  # assistant turns whose dropped reasoning the server put back
    reasoning_store: ReasoningStore | None = None  # where the reply's reasoning is kept, by its tool-call ids
    conversation: Conversation | None = None  # the request's messages, hashed: the key of a reply without calls


def prepare(request: ChatCompletionRequest, backend: Backend, *, dialect: str = "ga",
            default_max_tokens: int = 32768, locate: Locate = chat_location, salvage: bool = False,
            reasoning_store: ReasoningStore | None = None) -> ChatJob:
    """Renders and tokenizes the prompt and checks the limits; raises `RequestError` naming what is wrong (where
    the client's body has it: `locate`, for a request translated from another API's)."""
    body, restored = request.encoder_request(), 0
    if reasoning_store is not None:  # before rendering: the prompt a client that kept the reasoning gets
        body["messages"], restored = reasoning_store.restore(body["messages"])
    conversation = Conversation(body["messages"]) if reasoning_store is not None else None
    body = neutralised(body, backend)
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
    return ChatJob(request, ids, params, mode, prompt.endswith(FORCED_TOOL_CALLS),
                   salvage=salvage_requested(request, salvage), restored=restored, reasoning_store=reasoning_store,
                   conversation=conversation)


def salvage_requested(request: ChatCompletionRequest, default: bool) -> bool:
    """The request's `x_dsv4_salvage` (true or false), else the server's default (`--salvage-tool-calls`)."""
    value = (request.model_extra or {}).get("x_dsv4_salvage")
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"x_dsv4_salvage must be true or false, got {value!r}", param="x_dsv4_salvage")
    return value


@dataclass
class Step:
    """What one engine step added to a completion: parser events, the new tokens' logprobs, and the output."""

    events: list[Event]
    logprobs: list[TokenLogprob]
    output: OutputAccumulator  # the totals so far (token ids, finish and stop reasons)


@dataclass
class ChatRun:
    """Runs a job on a backend, parsing the text as it grows."""

    job: ChatJob
    backend: Backend
    events: list[Event] = field(default_factory=list)
    output: OutputAccumulator | None = None
    salvaged: Salvage | None = None  # tool calls found written as text, once the completion has ended

    async def steps(self) -> AsyncIterator[Step]:
        job = self.job
        parser = StreamParser(thinking_mode=job.thinking_mode, tools=job.request.tools)
        pending = parser.feed(FORCED_TOOL_CALLS) if job.forced_tool_call else []
        async for delta, out in with_totals(self.backend.stream(job.prompt_ids, job.params), job.prompt_ids):
            events = pending + parser.feed(delta.text) + (parser.finish() if out.finished else [])
            pending = []
            self.events += events
            self.output = out
            if out.finished:
                self._ended()
            yield Step(events, delta.logprobs or [], out)

    def _ended(self) -> None:
        """Salvages the calls written as text (when asked, and the model made none) and keeps the reasoning by the
        reply's tool-call ids."""
        job, message = self.job, fold_events(self.events, thinking_mode=self.job.thinking_mode)
        if job.salvage and not message.tool_calls and self.output.finish_reason != "length" \
                and job.request.tool_choice != "none":
            self.salvaged = salvage_tool_calls(message.content, job.request.tools)
        if job.reasoning_store is not None:
            ids = [c.id for c in message.tool_calls] or [c.id for c in self.salvaged_calls()] \
                or ([job.conversation.answer_key(message.content)] if job.conversation is not None else [])
            job.reasoning_store.record(ids, message.reasoning_content)

    def salvaged_calls(self) -> list:
        return [c.call for c in self.salvaged.calls] if self.salvaged is not None else []

    def salvaged_deltas(self) -> list[dict]:
        """The salvaged calls as tool-call deltas, sent at the end of a stream (whose content went out as text)."""
        return [{"tool_calls": [{"index": i, **c.to_openai()}]} for i, c in enumerate(self.salvaged_calls())]

    def warnings(self) -> list[dict]:
        """What the reply's `x_dsv4_warnings` say: calls salvaged, or written as text and not taken."""
        return self.salvaged.warnings() if self.salvaged is not None else []

    def message(self):
        message = fold_events(self.events, thinking_mode=self.job.thinking_mode)
        if self.salvaged_calls():  # the content stays as written: a stream has already sent it
            message.tool_calls = self.salvaged_calls()
            message.warnings += [w["message"] for w in self.warnings()]
        for warning in message.warnings:
            log.warning("completion parsed with recovery: %s", warning)
        return message

    def finish_reason(self) -> str:
        reason = self.output.finish_reason if self.output is not None else None
        if reason == "length":
            return "length"
        if any(isinstance(e, ToolCallStart) for e in self.events) or self.salvaged_calls():
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

"""A Responses API reply: output items in the order the model wrote them (`reasoning` with its text as
`reasoning_text` content, and as the summary when `reasoning.summary` asks for one; `message` with `output_text`;
`function_call` with `call_id` and JSON arguments), `status` (`incomplete` with `max_output_tokens` when the limit
cut it), usage with reasoning tokens; or, streamed, the Responses events with sequence numbers: response.created /
in_progress, output_item.added / done, content_part.added / done, output_text / reasoning_text /
function_call_arguments deltas and dones, then response.completed, response.incomplete or response.failed.

A completed or incomplete response whose request had `store` is kept for `previous_response_id`.
"""

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

from dsv4.encoding import ArgumentsDelta, ContentDelta, Event, ReasoningDelta, ToolCallEnd, ToolCallStart

from .backend import Backend
from .chat import ChatRun
from .protocol import error_body
from .responses import ResponseJob

log = logging.getLogger("dsv4.server")


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class Items:
    """Parser events -> output items, and the stream events that build them."""

    summary: bool
    items: list[dict] = field(default_factory=list)
    open: dict | None = None

    def feed(self, ev: Event) -> list[dict]:
        kind = {ReasoningDelta: "reasoning", ContentDelta: "message", ToolCallStart: "function_call"}.get(type(ev))
        out = []
        if kind is not None and (self.open is None or self.open["type"] != kind or kind == "function_call"):
            out += self.close()
            out += self._start(kind, ev)
        if isinstance(ev, ReasoningDelta | ContentDelta):
            part = self.open["content"][0]
            part["text"] += ev.text
            name = "reasoning_text" if isinstance(ev, ReasoningDelta) else "output_text"
            out.append(self._at({"type": f"response.{name}.delta", "content_index": 0, "delta": ev.text},
                                logprobs=name == "output_text"))
        elif isinstance(ev, ArgumentsDelta) and self.open is not None and self.open["type"] == "function_call":
            self.open["arguments"] += ev.text
            out.append(self._at({"type": "response.function_call_arguments.delta", "delta": ev.text}))
        elif isinstance(ev, ToolCallEnd):
            out += self.close()
        return out

    def _start(self, kind: str, ev: Event) -> list[dict]:
        if kind == "function_call":
            item = {"type": "function_call", "id": _item_id("fc"), "call_id": ev.id, "name": ev.name,
                    "arguments": "", "status": "in_progress"}
        elif kind == "reasoning":
            item = {"type": "reasoning", "id": _item_id("rs"), "summary": [], "content": [], "status": "in_progress"}
        else:
            item = {"type": "message", "id": _item_id("msg"), "role": "assistant", "content": [],
                    "status": "in_progress"}
        self.items.append(item)
        self.open = item
        out = [self._at({"type": "response.output_item.added", "item": _copy(item)}, with_item_id=False)]
        if kind != "function_call":
            part = {"type": "reasoning_text", "text": ""} if kind == "reasoning" else \
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item["content"].append(part)
            out.append(self._at({"type": "response.content_part.added", "content_index": 0, "part": _copy(part)}))
        return out

    def close(self, status: str = "completed") -> list[dict]:
        item, self.open = self.open, None
        if item is None:
            return []
        item["status"] = status
        out = []
        if item["type"] == "function_call":
            out.append(self._at({"type": "response.function_call_arguments.done", "arguments": item["arguments"]},
                                item=item))
        else:
            part = item["content"][0]
            name = "reasoning_text" if item["type"] == "reasoning" else "output_text"
            out.append(self._at({"type": f"response.{name}.done", "content_index": 0, "text": part["text"]},
                                item=item, logprobs=name == "output_text"))
            out.append(self._at({"type": "response.content_part.done", "content_index": 0, "part": _copy(part)},
                                item=item))
            if item["type"] == "reasoning" and self.summary:
                out += self._summary(item, part["text"])
        out.append(self._at({"type": "response.output_item.done", "item": _copy(item)}, item=item,
                            with_item_id=False))
        return out

    def _summary(self, item: dict, text: str) -> list[dict]:
        """V4 writes no summary of its reasoning: the reasoning itself stands in for one asked for."""
        summary = {"type": "summary_text", "text": text}
        item["summary"] = [summary]
        at = {"summary_index": 0}
        return [self._at({"type": "response.reasoning_summary_part.added", **at, "part": {**summary, "text": ""}},
                         item=item),
                self._at({"type": "response.reasoning_summary_text.delta", **at, "delta": text}, item=item),
                self._at({"type": "response.reasoning_summary_text.done", **at, "text": text}, item=item),
                self._at({"type": "response.reasoning_summary_part.done", **at, "part": dict(summary)}, item=item)]

    def _at(self, event: dict, item: dict | None = None, with_item_id: bool = True, logprobs: bool = False) -> dict:
        item = item or self.open
        where = {"output_index": self.items.index(item)}
        if with_item_id:
            where["item_id"] = item["id"]
        return {**event, **where, **({"logprobs": []} if logprobs else {})}


def _copy(value: dict) -> dict:
    return json.loads(json.dumps(value))


def _usage(job: ResponseJob, run: ChatRun, reasoning_tokens: int) -> dict:
    n_in, n_out = len(job.prompt_ids), len(run.output.token_ids) if run.output else 0
    return {"input_tokens": n_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n_out, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": n_in + n_out}


def response_object(job: ResponseJob, backend: Backend, status: str, output: list[dict], usage: dict | None = None,
                    error: dict | None = None) -> dict:
    r = job.request
    return {"id": job.response_id, "object": "response", "created_at": job.created_at, "status": status,
            "error": error, "model": backend.model_name, "output": output, "usage": usage,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": r.instructions, "max_output_tokens": r.max_output_tokens, "metadata": r.metadata or {},
            "parallel_tool_calls": r.parallel_tool_calls is not False, "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": (r.reasoning or {}).get("effort"), "summary": (r.reasoning or {}).get("summary")},
            "store": r.store, "temperature": r.temperature, "top_p": r.top_p,
            "text": r.text or {"format": {"type": "text"}}, "tool_choice": r.tool_choice or "auto",
            "tools": r.tools or [], "truncation": "disabled", "user": r.user}


@dataclass
class ResponseRun:
    """Runs a job: output items as they form, the reasoning tokens counted."""

    job: ResponseJob
    backend: Backend

    def __post_init__(self):
        self.run = ChatRun(self.job.chat, self.backend)
        self.items = Items(summary=self.job.request.summary_requested)
        self.reasoning_tokens, self._reasoning = 0, True

    async def events(self) -> AsyncIterator[dict]:
        async for step in self.run.steps():
            if self._reasoning and any(isinstance(e, ContentDelta | ToolCallStart) for e in step.events):
                self._reasoning = False
            if self._reasoning:
                self.reasoning_tokens = len(step.output.token_ids)
            for ev in step.events:
                for out in self.items.feed(ev):
                    yield out
        for i, call in enumerate(self.run.salvaged_calls()):  # calls written as text: function calls after it
            for ev in (ToolCallStart(i, call.id, call.name), ArgumentsDelta(i, call.arguments), ToolCallEnd(i)):
                for out in self.items.feed(ev):
                    yield out
        for out in self.items.close("incomplete" if self.status == "incomplete" else "completed"):
            yield out

    @property
    def status(self) -> str:
        return "incomplete" if self.run.output is not None and self.run.output.finish_reason == "length" \
            else "completed"

    def finish(self) -> dict:
        """The whole response; kept for previous_response_id when asked to."""
        if self.job.chat.thinking_mode != "thinking":
            self.reasoning_tokens = 0
        body = response_object(self.job, self.backend, self.status, self.items.items,
                               _usage(self.job, self.run, self.reasoning_tokens))
        if self.job.request.store:
            self.job.store.put(self.job.response_id, [*self.job.history, self._assistant_message()])
        return body

    def _assistant_message(self) -> dict:
        m = self.run.message()
        message: dict = {"role": "assistant", "content": m.content or ""}
        if m.reasoning_content:
            message["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            message["tool_calls"] = [tc.to_openai() for tc in m.tool_calls]
        return message


async def complete_response(job: ResponseJob, backend: Backend):
    run = ResponseRun(job, backend)
    try:
        async for _ in run.events():
            pass
    except Exception as e:
        log.exception("generation failed")
        return JSONResponse(error_body(f"generation failed: {e}", kind="server_error"), status_code=500)
    return run.finish()


async def stream_response(job: ResponseJob, backend: Backend) -> AsyncIterator[str]:
    seq = iter(range(1 << 62))

    def sse(event: dict) -> str:
        event = {**event, "sequence_number": next(seq)}
        return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"

    run = ResponseRun(job, backend)
    started = response_object(job, backend, "in_progress", [])
    yield sse({"type": "response.created", "response": started})
    yield sse({"type": "response.in_progress", "response": started})
    try:
        async for event in run.events():
            yield sse(event)
    except Exception as e:
        log.exception("generation failed")
        error = {"code": "server_error", "message": f"generation failed: {e}"}
        yield sse({"type": "response.failed", "response": response_object(job, backend, "failed", run.items.items,
                                                                           error=error)})
        return
    body = run.finish()
    yield sse({"type": f"response.{body['status']}", "response": body})

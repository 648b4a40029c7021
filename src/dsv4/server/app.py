"""The OpenAI-compatible HTTP API: `POST /v1/chat/completions` (streaming or not), `POST /v1/responses` (OpenAI's
Responses API, `responses.py`), `POST /v1/messages` (Anthropic's, `anthropic.py`), `POST /v1/completions`,
`GET /v1/models[/{id}]`, `GET /health`, `GET /metrics`.

    app = create_app(EngineBackend(Engine.from_pretrained("ckpt/"), "deepseek-v4"))
    uvicorn.run(app)

Errors use OpenAI's error object with the status it would use: 400 for a request that is wrong (the message names
the field), 404 for another model's name, 413 for a body over the size limit (before it is read), 500 when
generation itself fails. A streaming request that fails after its first chunk gets an `{"error": ...}` event, then
`[DONE]`. A client that disconnects cancels its request, freeing its KV blocks.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from .anthropic import (
    CountTokensRequest,
    MessagesRequest,
    anthropic_error,
    complete_messages,
    count_tokens,
    prepare_messages,
    stream_messages,
)
from .api_key import ApiKey
from .backend import Backend
from .body_limit import BodyLimit
from .chat import ChatJob, ChatRun, delta_chunks, logprobs_content, prepare
from .completions import CompletionJob, legacy_logprobs, prepare_completion, text_steps
from .errors import RequestError
from .metrics import MeteredBackend, Metrics
from .protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    CompletionRequest,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    completion_id,
    error_body,
)
from .reasoning_store import ReasoningStore
from .response_store import ResponseStore
from .responses import ResponsesRequest, prepare_response
from .responses_output import complete_response, stream_response

log = logging.getLogger("dsv4.server")


DEFAULT_MAX_REQUEST_BYTES = 16 << 20  # a whole 1M-token context is ~4 MB of text: 4x for JSON escapes and tools
OPEN_PATHS = ("/health", "/metrics")  # for load balancers and scrapers, with or without an API key
# events must reach the client as they are written: no cache may keep them, no proxy (nginx) buffer them
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def create_app(backend: Backend, *, dialect: str = "ga", default_max_tokens: int = 32768,
               salvage_tool_calls: bool = False, retain_reasoning: bool = True,
               reasoning_store: ReasoningStore | None = None,
               api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The API over `backend`. `default_max_tokens`: a request's completion limit when it sets none (lowered to
    what fits in the context). `api_key`: when set, every path but /health and /metrics (/docs and
    /openapi.json included) needs `Authorization: Bearer <api_key>` or `x-api-key: <api_key>` (401 otherwise).
    `max_request_bytes`: a larger body is refused with 413, from its Content-Length before any of it is read, or
    as soon as a chunked body passes the limit; past their first MiB, the bodies of the requests being served
    may hold 4x this at most (503 beyond: `BodyLimit`)."""
    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        close = getattr(backend, "close", None)  # an engine process ends with the server
        if close is not None:
            await asyncio.to_thread(close)

    app = FastAPI(title="dsv4", description="DeepSeek-V4, OpenAI-compatible", lifespan=lifespan)
    app.state.backend = backend
    # reasoning retention (reasoning_store.py): on unless turned off; `reasoning_store` for a file-backed one
    store = (reasoning_store if reasoning_store is not None else ReasoningStore()) if retain_reasoning else None
    app.state.reasoning_store = store
    metrics = Metrics(backend)
    response_store = ResponseStore()  # the conversations behind stored responses, for previous_response_id
    backend = MeteredBackend(backend, metrics)

    if api_key is not None:
        app.add_middleware(ApiKey, key=api_key, open_paths=OPEN_PATHS, refuse=_unauthorized)
    app.add_middleware(BodyLimit, limit=max_request_bytes, refuse=lambda r: _too_large(r, max_request_bytes))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()) if x != 'body') or 'body'}: "
                            f"{err.get('msg')}" for err in e.errors()[:5])
        if first.get("type") == "json_invalid":  # its loc holds the character offset, not a field
            where = None
            message = f"the body is not valid JSON: {(first.get('ctx') or {}).get('error', 'JSON decode error')} " \
                      f"at character {first.get('loc', (None, '?'))[-1]}"
        if _anthropic(request):
            return JSONResponse(anthropic_error(message), status_code=400)
        return JSONResponse(error_body(message, param=where or None), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        if e.status_code == 413:  # a chunked body over the limit (BodyLimit)
            return _too_large(request, max_request_bytes)
        if e.status_code == 503:  # large bodies over BodyLimit's budget
            kind = "overloaded_error" if _anthropic(request) else "server_error"
            body = anthropic_error(str(e.detail), kind) if _anthropic(request) else \
                error_body(str(e.detail), kind=kind, code="server_busy")
            return JSONResponse(body, status_code=503, headers={"retry-after": "1", "connection": "close"})
        if _anthropic(request):
            kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
            return JSONResponse(anthropic_error(str(e.detail), kind), status_code=e.status_code)
        return JSONResponse(error_body(str(e.detail), code=str(e.status_code)), status_code=e.status_code)

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError):
        if _anthropic(request):
            kind = "not_found_error" if e.status == 404 else "invalid_request_error"
            return JSONResponse(anthropic_error(str(e), kind), status_code=e.status)
        return JSONResponse(error_body(str(e), code=e.code, param=e.param), status_code=e.status)

    @app.get("/health")
    async def health():
        check = getattr(backend, "check", None)  # an upstream backend probes its upstreams (upstream.py)
        if check is not None:
            state = await check()
            return JSONResponse(state, status_code=200 if state["status"] == "ok" else 503)
        if not getattr(backend, "alive", True):
            return JSONResponse({"status": "engine down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return ModelList(data=[ModelCard(id=backend.model_name, max_model_len=backend.max_model_len)])

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != backend.model_name:
            raise RequestError(f"the model {model_id!r} does not exist; this server serves {backend.model_name!r}",
                               status=404, code="model_not_found")
        return ModelCard(id=backend.model_name, max_model_len=backend.max_model_len)

    def check_model(name: str | None):
        if name is not None and name != backend.model_name:
            raise RequestError(f"the model {name!r} does not exist; this server serves {backend.model_name!r}",
                               status=404, code="model_not_found", param="model")

    async def answer(request, raw: Request, job, stream, complete):
        """The job's events as SSE when the request streams, else the whole reply. A client that disconnects
        while waiting for a whole reply cancels it (Starlette cancels only streaming responses on its own): an agent
        that times out and retries would otherwise leave the first request generating."""
        if request.stream:
            return StreamingResponse(stream(job, backend), media_type="text/event-stream",
                                     headers={**STREAM_HEADERS, **_job_headers(job)})
        task = asyncio.ensure_future(complete(job, backend))
        while not (await asyncio.wait({task}, timeout=0.25))[0]:
            if await raw.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        return _with_headers(task.result(), _job_headers(job))

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        check_model(request.model)
        job = await asyncio.to_thread(prepare_completion, request, backend, default_max_tokens=default_max_tokens)
        return await answer(request, raw, job, _text_sse, _text_complete)

    @app.post("/v1/messages")
    async def messages(request: MessagesRequest, raw: Request):
        check_model(request.model)
        job = await asyncio.to_thread(prepare_messages, request, backend, dialect=dialect,
                                      salvage=salvage_tool_calls, reasoning_store=store)
        return await answer(request, raw, job, stream_messages, _messages_complete)

    @app.post("/v1/messages/count_tokens")
    async def messages_count_tokens(request: CountTokensRequest):
        check_model(request.model)
        return await asyncio.to_thread(count_tokens, request, backend, dialect=dialect)

    @app.post("/v1/responses")
    async def responses(request: ResponsesRequest, raw: Request):
        check_model(request.model)
        job = await asyncio.to_thread(prepare_response, request, backend, response_store, dialect=dialect,
                                      default_max_tokens=default_max_tokens, salvage=salvage_tool_calls,
                                      reasoning_store=store)
        return await answer(request, raw, job, stream_response, complete_response)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, raw: Request):
        check_model(request.model)
        # rendering and tokenizing a long conversation takes a while: off the event loop, which streams the others
        job = await asyncio.to_thread(prepare, request, backend, dialect=dialect, default_max_tokens=default_max_tokens,
                                      salvage=salvage_tool_calls, reasoning_store=store)
        return await answer(request, raw, job, _sse, _complete)

    return app


def _job_headers(job) -> dict[str, str]:
    """`x-dsv4-reasoning-restored: N` when the server put back the reasoning of N assistant turns."""
    restored = getattr(job, "restored", 0)
    return {"x-dsv4-reasoning-restored": str(restored)} if restored else {}


def _with_headers(result, headers: dict[str, str]):
    if not headers:
        return result
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    return JSONResponse(jsonable_encoder(result), headers=headers)


def _unauthorized(request: Request) -> JSONResponse:
    message = "missing or incorrect API key (Authorization: Bearer ... or x-api-key)"
    if _anthropic(request):
        return JSONResponse(anthropic_error(message, "authentication_error"), status_code=401)
    return JSONResponse(error_body(message, code="invalid_api_key"), status_code=401)


def _too_large(request: Request, limit: int) -> JSONResponse:
    """413, and the connection closed: the rest of the body is not read (uvicorn would read it to reuse the
    connection)."""
    message = f"the request body is over this server's limit of {limit} bytes (dsv4 serve --max-request-bytes)"
    body = anthropic_error(message, "request_too_large") if _anthropic(request) else \
        error_body(message, code="request_too_large")
    return JSONResponse(body, status_code=413, headers={"connection": "close"})


def _status(e: Exception) -> int:
    """A failed generation's status: 500, or what its error names (an upstream's 429, 502, 504: upstream.py)."""
    return getattr(e, "status", 500)


def _anthropic(request: Request) -> bool:
    """Anthropic's routes answer errors in Anthropic's form."""
    return request.url.path.startswith("/v1/messages")


async def _messages_complete(job: ChatJob, backend: Backend):
    try:
        return await complete_messages(job, backend)
    except Exception as e:
        log.exception("generation failed")
        return JSONResponse(anthropic_error(f"generation failed: {e}", "api_error"), status_code=_status(e))


async def _complete(job: ChatJob, backend: Backend) -> JSONResponse | ChatCompletion:
    run = ChatRun(job, backend)
    logprobs = []
    try:
        async for step in run.steps():
            logprobs += step.logprobs
    except Exception as e:
        log.exception("generation failed")
        return JSONResponse(error_body(f"generation failed: {e}", kind="server_error"), status_code=_status(e))
    message = run.message()
    out = run.output
    completion = ChatCompletion(
        id=completion_id(), model=backend.model_name,
        choices=[Choice(
            message=ResponseMessage(
                content=message.content if message.content or not message.tool_calls else None,
                reasoning_content=message.reasoning_content,
                tool_calls=[tc.to_openai() for tc in message.tool_calls] or None),
            finish_reason=run.finish_reason(),
            logprobs=ChoiceLogprobs(content=logprobs_content(logprobs, backend.token_bytes))
            if job.params.logprobs is not None else None)],
        usage=_usage(job, out.token_ids))
    warnings = run.warnings()  # a salvaged tool call, or one written as text and left (`--salvage-tool-calls`)
    return JSONResponse({**completion.model_dump(), "x_dsv4_warnings": warnings}) if warnings else completion


def _usage(job: ChatJob | CompletionJob, token_ids: list[int]) -> Usage:
    n = len(token_ids)
    return Usage(prompt_tokens=len(job.prompt_ids), completion_tokens=n, total_tokens=len(job.prompt_ids) + n)


async def _sse(job: ChatJob, backend: Backend) -> AsyncIterator[str]:
    """Server-sent events: a role delta, content / reasoning / tool-call deltas as they form, the finish reason,
    usage (with stream_options.include_usage), `[DONE]`."""
    cid, model = completion_id(), backend.model_name
    created = int(time.time())

    def chunk(delta: dict | None = None, finish_reason: str | None = None, logprobs=None, usage=None,
              warnings=None) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                             **({"logprobs": logprobs} if logprobs is not None else {})}]
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, **({"usage": usage} if usage is not None else {}),
                **({"x_dsv4_warnings": warnings} if warnings else {})}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    run = ChatRun(job, backend)
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for step in run.steps():
            deltas = delta_chunks(step.events)
            if step.logprobs:
                lp = {"content": logprobs_content(step.logprobs, backend.token_bytes)}
                if not deltas:
                    deltas = [{}]
                yield chunk(deltas[0], logprobs=lp)
                deltas = deltas[1:]
            for delta in deltas:
                yield chunk(delta)
    except Exception as e:
        log.exception("generation failed")
        yield f"data: {json.dumps(error_body(f'generation failed: {e}', kind='server_error'))}\n\n"
        yield "data: [DONE]\n\n"
        return
    for delta in run.salvaged_deltas():  # the content went out as text; the calls follow it
        yield chunk(delta)
    yield chunk({}, finish_reason=run.finish_reason(), warnings=run.warnings())
    if job.request.include_usage:
        yield chunk(usage=_usage(job, run.output.token_ids).model_dump())
    yield "data: [DONE]\n\n"


def _prompt_text(job: CompletionJob, backend: Backend) -> str:
    """The prompt as text (a token-id prompt decoded from its tokens' bytes)."""
    if isinstance(job.request.prompt, str):
        return job.request.prompt
    return b"".join(backend.token_bytes(t) for t in job.prompt_ids).decode("utf-8", errors="replace")


async def _text_complete(job: CompletionJob, backend: Backend):
    out = None
    try:
        async for _, total in text_steps(job, backend):
            out = total
    except Exception as e:
        log.exception("generation failed")
        return JSONResponse(error_body(f"generation failed: {e}", kind="server_error"), status_code=_status(e))
    echo = _prompt_text(job, backend) if job.request.echo else ""
    lp = legacy_logprobs(out.logprobs or [], backend.token_bytes, len(echo)) if job.params.logprobs is not None \
        else None
    return {"id": completion_id("cmpl"), "object": "text_completion", "created": int(time.time()),
            "model": backend.model_name,
            "choices": [{"index": 0, "text": echo + out.text, "logprobs": lp, "finish_reason": out.finish_reason}],
            "usage": _usage(job, out.token_ids).model_dump()}


async def _text_sse(job: CompletionJob, backend: Backend) -> AsyncIterator[str]:
    cid, created, model = completion_id("cmpl"), int(time.time()), backend.model_name

    def chunk(choice: dict | None, usage=None) -> str:
        body = {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [choice] if choice is not None else [], **({"usage": usage} if usage else {})}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    offset, out = 0, None
    if job.request.echo:
        echo = _prompt_text(job, backend)
        yield chunk({"index": 0, "text": echo, "logprobs": None, "finish_reason": None})
        offset = len(echo)
    try:
        async for delta, out in text_steps(job, backend):
            lp = legacy_logprobs(delta.logprobs or [], backend.token_bytes, offset) \
                if job.params.logprobs is not None else None
            offset += sum(len(t) for t in lp["tokens"]) if lp else len(delta.text)
            if delta.text or lp or out.finished:
                yield chunk({"index": 0, "text": delta.text, "logprobs": lp, "finish_reason": out.finish_reason})
    except Exception as e:
        log.exception("generation failed")
        yield f"data: {json.dumps(error_body(f'generation failed: {e}', kind='server_error'))}\n\n"
        yield "data: [DONE]\n\n"
        return
    if job.request.include_usage:
        yield chunk(None, usage=_usage(job, out.token_ids).model_dump())
    yield "data: [DONE]\n\n"

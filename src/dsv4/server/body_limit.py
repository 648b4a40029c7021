"""`BodyLimit`: a request body over the server's limit refused with 413 before it is read.

Without it one 200 MB chat request grew the server to 23.6 GB: the whole body was read, parsed, rendered and
tokenized. A body that declares its length (Content-Length) is refused before any of it is read; a chunked one
(no length) as soon as the bytes read pass the limit, so at most the limit is ever held. Starlette has a body
limiter (FastAPI's `max_body_size`), but it answers a declared-too-large body in plain text whatever the app
would answer, and OpenAI and Anthropic clients read their own error objects.
"""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware. `refuse(request)`: the 413 response; a chunked body over the limit raises
    `HTTPException(413)` from `receive`, which the app's exception handler for it answers."""

    def __init__(self, app: ASGIApp, limit: int, refuse: Callable[[Request], Response]):
        if limit < 0:
            raise ValueError(f"the request-body limit must be at least 0 bytes; got {limit}")
        self.app, self.limit, self.refuse = app, limit, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(Request(scope))(scope, receive, send)
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise HTTPException(413)
            return message

        await self.app(scope, counted, send)

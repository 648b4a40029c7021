"""`BodyLimit`: a request body over the server's limit refused with 413 before it is read, and large bodies held
at once bounded all together.

Without it one 200 MB chat request grew the server to 23.6 GB: the whole body was read, parsed, rendered and
tokenized. A body that declares its length (Content-Length) is refused before any of it is read; a chunked one
(no length) as soon as the bytes read pass the limit, so at most the limit is ever held. Starlette has a body
limiter (FastAPI's `max_body_size`), but it answers a declared-too-large body in plain text whatever the app
would answer, and OpenAI and Anthropic clients read their own error objects.

Each body under the limit still costs several times its size while it is parsed and rendered (a 15 MB one:
70 MB), and a thousand connections could each send one. So the bytes read past `SMALL` of every request being
served count against a shared budget (`in_flight_budget`, 4 limits by default); a request whose body would take
it past the budget is answered 503 and may retry. Requests of `SMALL` bytes or fewer, nearly all of them, are
never held back.
"""

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SMALL = 1 << 20


class BodyLimit:
    """ASGI middleware. `refuse(request)`: the 413 response to a body declared too large. A chunked body over the
    limit raises `HTTPException(413)` from `receive`, one over the budget `HTTPException(503)`: the app's
    exception handler answers them."""

    def __init__(self, app: ASGIApp, limit: int, refuse: Callable[[Request], Response],
                 in_flight_budget: int | None = None):
        if limit < 0:
            raise ValueError(f"the request-body limit must be at least 0 bytes; got {limit}")
        self.app, self.limit, self.refuse = app, limit, refuse
        self.budget = 4 * limit if in_flight_budget is None else in_flight_budget
        self.in_flight = 0  # bytes past SMALL of the bodies of requests being served (one event loop: no lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(Request(scope))(scope, receive, send)
        read = held = 0

        async def counted() -> Message:
            nonlocal read, held
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise HTTPException(413)
                more = read - SMALL - held
                if more > 0:
                    if self.in_flight + more > self.budget:
                        raise HTTPException(503, f"the server is holding {self.in_flight} bytes of large "
                                                 f"requests (at most {self.budget}); retry shortly")
                    self.in_flight += more
                    held += more
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= held

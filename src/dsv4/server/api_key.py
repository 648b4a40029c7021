"""`ApiKey`: requests must carry the server's API key, as OpenAI clients send it (`Authorization: Bearer KEY`) or
as Anthropic clients do (`x-api-key: KEY`); a few open paths (health checks, metrics) need none.

A pure ASGI middleware rather than Starlette's `BaseHTTPMiddleware`, which runs the app in a task group of its
own: an error raised while the body is read (the body limit's 413) would reach FastAPI wrapped, and be answered
as a 400 "error parsing the body".
"""

import hmac
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


class ApiKey:
    """`refuse(request)`: the 401 response."""

    def __init__(self, app: ASGIApp, key: str, open_paths: tuple[str, ...], refuse: Callable[[Request], Response]):
        self.app, self.open_paths, self.refuse = app, open_paths, refuse
        if not key.strip():  # an empty key would let a request with no key through
            raise ValueError("the API key is empty")
        self.expected = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self.carries_key(Headers(scope=scope)):
            return await self.app(scope, receive, send)
        await self.refuse(Request(scope))(scope, receive, send)

    def carries_key(self, headers: Headers) -> bool:
        scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
        # the scheme is case-insensitive (RFC 9110 11.1): `bearer KEY` is as good as `Bearer KEY`
        bearer = credentials.strip().encode() if scheme.lower() == "bearer" else b""
        x_key = headers.get("x-api-key", "").encode()
        # both compared, in constant time: the time taken tells nothing of the key
        return hmac.compare_digest(bearer, self.expected) | hmac.compare_digest(x_key, self.expected)

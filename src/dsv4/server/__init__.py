"""The OpenAI-compatible server: chat completions (tools, streaming, `reasoning_content`) over a `Backend`."""

from .app import create_app
from .backend import Backend, EngineBackend
from .errors import RequestError

__all__ = ["Backend", "EngineBackend", "RequestError", "create_app"]

"""Errors the server answers with (as OpenAI error objects)."""


class RequestError(ValueError):
    """A request the server refuses: HTTP `status`, OpenAI error `code` and `param`."""

    def __init__(self, message: str, *, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

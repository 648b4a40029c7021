"""The agent's exception tree: each one ends a run with a status the trajectory records."""


class AgentError(Exception):
    """Root of every error `dsv4.agent` raises on purpose; `status` is the run's ending status."""

    status = "error"


class LimitsExceeded(AgentError):
    """A budget of the run (steps, tokens, seconds) is spent."""

    status = "limits_exceeded"


class ClientError(AgentError):
    """The model endpoint refused or failed a request (after retries); `http_status` when it answered."""

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class ContextExhausted(ClientError):
    """The conversation no longer fits the model's context."""

    status = "context_exhausted"

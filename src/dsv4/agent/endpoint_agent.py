"""`EndpointAgent`: makes the model agent for one task's sandbox, talking to an OpenAI-compatible endpoint.

It is a plain value (URL, model, key, settings), so it can be sent to another process or a Ray node and called
there; each copy opens its own connection on first use, and one copy shared by threads shares one connection pool.
"""

from dataclasses import dataclass, field

from dsv4.sandbox import Sandbox

from .client import OpenAIClient
from .loop import Agent, AgentConfig
from .sandbox_tools import sandbox_tools
from .tools import ToolRegistry


@dataclass
class EndpointAgent:
    url: str
    """The endpoint's base URL, e.g. http://10.0.0.5:8000/v1 (every node that runs a task must reach it)."""
    model: str
    api_key: str | None = field(default=None, repr=False)  # kept out of logs
    extra: dict = field(default_factory=dict)
    """Goes into every request body (max_tokens, reasoning_effort, ...)."""
    max_steps: int = 100
    context_tokens: int | None = None
    """The model's context where the endpoint lists it."""
    strict_tools: bool = False
    """The tools as strict functions (`AgentConfig.strict_tools`)."""
    _client: OpenAIClient | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def client(self) -> OpenAIClient:
        if self._client is None:
            self._client = OpenAIClient(self.url, self.model, self.api_key, extra=self.extra)
        return self._client

    def __call__(self, sb: Sandbox) -> Agent:
        config = AgentConfig(max_steps=self.max_steps, context_tokens=self.context_tokens,
                             strict_tools=self.strict_tools)
        return Agent(self.client, ToolRegistry(sandbox_tools(sb)), config, sandbox=sb)

    def __getstate__(self) -> dict:
        # an open HTTP client does not travel: the copy opens its own
        return {**self.__dict__, "_client": None}

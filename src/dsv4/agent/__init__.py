"""A long-running tool-use agent over any V4 endpoint, with tools run in a `dsv4.sandbox`.

    with Sandbox.create("process") as sb:
        agent = Agent(OpenAIClient("http://127.0.0.1:8000/v1", "deepseek-v4"), ToolRegistry(sandbox_tools(sb)))
        trajectory = agent.run("Fix the failing test.", save_to=Path("run.json"))
    trajectory.status, trajectory.answer
"""

from .client import ChatClient, Completion, OpenAIClient
from .errors import AgentError, ClientError, ContextExhausted, LimitsExceeded
from .loop import Agent, AgentConfig
from .messages import Message, ToolCall
from .sandbox_tools import sandbox_tools
from .tools import Tool, ToolFailed, ToolOutput, ToolRegistry
from .trajectory import Trajectory

__all__ = ["Agent", "AgentConfig", "AgentError", "ChatClient", "ClientError", "Completion", "ContextExhausted",
           "LimitsExceeded", "Message", "OpenAIClient", "Tool", "ToolCall", "ToolFailed", "ToolOutput",
           "ToolRegistry", "Trajectory", "sandbox_tools"]

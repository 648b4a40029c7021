"""A long-running tool-use agent over any V4 endpoint, with tools run in a `dsv4.sandbox`.

    with Sandbox.create("process") as sb:
        agent = Agent(OpenAIClient("http://127.0.0.1:8000/v1", "deepseek-v4"), ToolRegistry(sandbox_tools(sb)))
        trajectory = agent.run("Fix the failing test.", save_to=Path("run.json"))
    trajectory.status, trajectory.answer

A run can also be stepped, forked mid-way into independent runs (best-of-n, tree search) and resumed after a crash:

    agent = Agent(client, ToolRegistry(sandbox_tools(sb)), sandbox=sb)
    run = agent.start("Fix the failing test.")
    run.step()
    a, b = run.fork(), run.fork()            # each in a sandbox of its own
    agent.resume(Path("run.json"), journal=Path("sandbox.jsonl")).finish()   # after a kill -9
"""

from .client import ChatClient, Completion, OpenAIClient
from .errors import AgentError, ClientError, ContextExhausted, LimitsExceeded
from .loop import Agent, AgentConfig
from .messages import Message, ToolCall
from .run import AgentRun
from .sandbox_tools import sandbox_tools
from .tools import Tool, ToolFailed, ToolOutput, ToolRegistry
from .trajectory import Trajectory

__all__ = ["Agent", "AgentConfig", "AgentError", "AgentRun", "ChatClient", "ClientError", "Completion",
           "ContextExhausted", "LimitsExceeded", "Message", "OpenAIClient", "Tool", "ToolCall", "ToolFailed",
           "ToolOutput", "ToolRegistry", "Trajectory", "sandbox_tools"]

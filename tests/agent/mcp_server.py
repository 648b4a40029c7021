"""A small MCP server for the bridge tests: in-process (`SERVER`) or over stdio (`python -m tests.agent.mcp_server`)."""

import time

from mcp.server.mcpserver import MCPServer

SERVER = MCPServer("calc")


@SERVER.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@SERVER.tool()
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    if b == 0:
        raise ValueError("division by zero")
    return a / b


@SERVER.tool()
def nap(seconds: float) -> str:
    """Sleep, then say so."""
    time.sleep(seconds)
    return "rested"


if __name__ == "__main__":
    SERVER.run("stdio")

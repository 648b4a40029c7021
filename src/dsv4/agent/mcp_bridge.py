"""`McpTools`: the tools of MCP servers as agent `Tool`s (the `mcp` SDK's `Client`: stdio commands, streamable
HTTP URLs, or in-process servers).

The SDK is async and the agent loop is not: the clients live on an event loop in a background thread, opened when
the block starts and closed when it ends, and each tool call runs there with a timeout. A call the server reports
as an error (`is_error`) reaches the model as a failed tool output with the server's text; so does a timeout or a
dropped connection. A stdio server's stderr goes to a private file (servers log tracebacks there, which would
interleave with the agent's own output); a server that fails to start is reported with the end of it.
"""

import asyncio
import json
import shlex
import tempfile
import threading
from contextlib import AsyncExitStack

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from .tools import Tool, ToolFailed


def server_spec(spec: str):
    """`http(s)://...` -> that URL (streamable HTTP); anything else -> a command line (shell quoting) run over
    stdio."""
    if spec.startswith(("http://", "https://")):
        return spec
    argv = shlex.split(spec)
    if not argv:
        raise ValueError("an MCP server is a URL or a command line; got an empty string")
    return StdioServerParameters(command=argv[0], args=argv[1:])


class McpTools:
    """`with McpTools({"files": "python -m my_server", "web": "http://host/mcp"}) as mcp: mcp.tools()`.

    `namespace=True` names each tool `{server}__{tool}` (for servers whose tool names collide)."""

    def __init__(self, servers: dict, *, timeout_s: float = 120.0, connect_timeout_s: float = 60.0,
                 namespace: bool = False):
        self.servers = {name: server_spec(s) if isinstance(s, str) else s for name, s in servers.items()}
        self.timeout_s, self.connect_timeout_s, self.namespace = timeout_s, connect_timeout_s, namespace
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dsv4-mcp", daemon=True)
        self._stack: AsyncExitStack | None = None
        self._tools: list[Tool] = []
        self._errlogs = {name: tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
                         for name, spec in self.servers.items() if isinstance(spec, StdioServerParameters)}

    def __enter__(self) -> "McpTools":
        self._thread.start()
        try:
            self._tools = self._run(self._open(), self.connect_timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def tools(self) -> list[Tool]:
        return list(self._tools)

    def close(self):
        if self._stack is not None:
            try:
                self._run(self._stack.aclose(), self.connect_timeout_s)
            except Exception:  # a server that died while closing: nothing left to release
                pass
            self._stack = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        for errlog in self._errlogs.values():
            errlog.close()

    def _run(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()  # the call stops waiting on the server
            raise

    async def _open(self) -> list[Tool]:
        self._stack = AsyncExitStack()
        tools = []
        for server, spec in self.servers.items():
            errlog = self._errlogs.get(server)
            try:
                transport = stdio_client(spec, errlog=errlog) if errlog is not None else spec
                client = await self._stack.enter_async_context(Client(transport))
                listed, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listed += page.tools
                    cursor = page.next_cursor
                    if cursor is None:
                        break
            except Exception as e:
                said = ""
                if errlog is not None:
                    errlog.seek(0)
                    said = errlog.read()[-2000:].strip()
                raise ConnectionError(f"MCP server {server!r}: {type(e).__name__}: {e}"
                                      + (f"; its stderr ends: {said}" if said else "")) from e
            for t in listed:
                name = f"{server}__{t.name}" if self.namespace else t.name
                tools.append(Tool(name, t.description or "", t.input_schema or {"type": "object"},
                                  self._caller(client, server, t.name)))
        return tools

    def _caller(self, client: Client, server: str, tool: str):
        def call(**arguments) -> str:
            try:
                result = self._run(client.call_tool(tool, arguments), self.timeout_s)
            except TimeoutError as e:
                raise ToolFailed(f"error: {server}/{tool} did not answer within {self.timeout_s:g} s") from e
            except Exception as e:
                raise ToolFailed(f"error: {server}/{tool}: {type(e).__name__}: {e}") from e
            text = result_text(result)
            if result.is_error:
                raise ToolFailed(f"error from {server}/{tool}: {text}")
            return text

        return call


def result_text(result) -> str:
    """A tool result as text: its text parts, others named by kind; structured content when there is no text."""
    parts = []
    for item in result.content or []:
        if getattr(item, "type", None) == "text":
            parts.append(item.text)
        else:
            kind = getattr(item, "type", type(item).__name__)
            parts.append(f"[{kind} content{': ' + item.mime_type if getattr(item, 'mime_type', None) else ''}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)

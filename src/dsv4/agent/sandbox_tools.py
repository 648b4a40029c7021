"""The default tools, run in a `dsv4.sandbox.Sandbox`: `bash` (a persistent shell: cwd and exported variables
carry over), `read_file` and `write_file`.

Output shown to the model is capped (`max_output_chars`, the middle elided with a note saying how much), since
every tool result stays in the context for the rest of the run; the sandbox's own byte cap applies before that.
"""

from dsv4.sandbox import Sandbox, SandboxFileError

from .tools import Tool, ToolFailed


def elide(text: str, limit: int) -> str:
    """text, or its head and tail with a note of how many characters were left out between them."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters elided ...]\n{text[-tail:]}"


def sandbox_tools(sandbox: Sandbox, *, timeout_s: float = 120.0, max_output_chars: int = 16000) -> list[Tool]:
    def bash(command: str, timeout: float | None = None) -> str:
        r = sandbox.run_shell(command, timeout=min(timeout or timeout_s, timeout_s))
        parts = [f"exit code: {r.exit_code}" + (" (timed out, killed)" if r.timed_out else "")]
        for name, text, cut in (("stdout", r.stdout, r.stdout_truncated), ("stderr", r.stderr, r.stderr_truncated)):
            if text or cut:
                parts.append(f"{name}{' (truncated by the sandbox)' if cut else ''}:\n{elide(text, max_output_chars)}")
        out = "\n".join(parts)
        if r.exit_code != 0:
            raise ToolFailed(out)
        return out

    def read_file(path: str, offset: int = 0, limit: int | None = None) -> str:
        try:
            text = sandbox.read_file(path).decode("utf-8", errors="replace")
        except SandboxFileError as e:
            raise ToolFailed(f"error: cannot read {path}: {e}") from e
        lines = text.splitlines(keepends=True)
        chosen = "".join(lines[offset:offset + limit if limit else None])
        return elide(chosen, max_output_chars)

    def write_file(path: str, content: str) -> str:
        try:
            sandbox.write_file(path, content)
        except SandboxFileError as e:
            raise ToolFailed(f"error: cannot write {path}: {e}") from e
        return f"wrote {len(content.encode())} bytes to {path}"

    return [
        Tool("bash", "Run a bash command in the workspace. The shell persists between calls: cd and exported "
             "variables carry over. Returns the exit code, stdout and stderr.",
             {"type": "object", "properties": {
                 "command": {"type": "string", "description": "the command line"},
                 "timeout": {"type": "number", "description": f"seconds (at most {timeout_s:g})",
                             "exclusiveMinimum": 0}},
              "required": ["command"]}, bash, journaled=True),
        Tool("read_file", "Read a text file (path absolute or relative to the workspace); optionally from line "
             "`offset` (0-based), at most `limit` lines.",
             {"type": "object", "properties": {
                 "path": {"type": "string"}, "offset": {"type": "integer", "minimum": 0},
                 "limit": {"type": "integer", "minimum": 1}},
              "required": ["path"]}, read_file, journaled=True),
        Tool("write_file", "Create or overwrite a text file (missing directories are created).",
             {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
              "required": ["path", "content"]}, write_file, journaled=True),
    ]

"""`AsyncSandbox`: the async twin of `Sandbox`; each sandbox's blocking calls run on its own thread."""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from dsv4.sandbox.sandbox import Sandbox


class AsyncSandbox:
    """Same methods as `Sandbox`, awaitable."""

    def __init__(self, sandbox: Sandbox, executor: ThreadPoolExecutor):
        self.sandbox, self._executor = sandbox, executor

    @classmethod
    async def create(cls, backend="process", **kwargs) -> "AsyncSandbox":
        return await cls._start(functools.partial(Sandbox.create, backend, **kwargs))

    @classmethod
    async def resume(cls, journal, **kwargs) -> "AsyncSandbox":
        return await cls._start(functools.partial(Sandbox.resume, journal, **kwargs))

    @classmethod
    async def restore(cls, snap, **kwargs) -> "AsyncSandbox":
        return await cls._start(functools.partial(Sandbox.restore, snap, **kwargs))

    @classmethod
    async def _start(cls, make) -> "AsyncSandbox":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsv4-sandbox")
        try:
            sandbox = await asyncio.get_running_loop().run_in_executor(executor, make)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(sandbox, executor)

    async def _call(self, name: str, *args, **kwargs):
        fn = functools.partial(getattr(self.sandbox, name), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run_shell(self, cmd: str, timeout: float = 30.0, stdin=None, **kwargs):
        return await self._call("run_shell", cmd, timeout, stdin, **kwargs)

    async def run_fresh(self, cmd: str, env: dict[str, str], cwd: str, timeout: float = 30.0, **kwargs):
        return await self._call("run_fresh", cmd, env, cwd, timeout, **kwargs)

    async def stop_processes(self) -> int:
        return await self._call("stop_processes")

    async def read_file(self, path: str, **kwargs) -> bytes:
        return await self._call("read_file", path, **kwargs)

    async def write_file(self, path: str, content, mode: int = 0o644) -> None:
        return await self._call("write_file", path, content, mode)

    async def list_dir(self, path: str = "."):
        return await self._call("list_dir", path)

    async def upload(self, host_path, path: str) -> None:
        return await self._call("upload", host_path, path)

    async def download(self, path: str, host_path, **kwargs) -> None:
        return await self._call("download", path, host_path, **kwargs)

    async def call(self, name: str, *args, **kwargs):
        return await self._call("call", name, *args, **kwargs)

    async def snapshot(self):
        return await self._call("snapshot")

    async def close(self) -> None:
        try:
            await self._call("close")
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

"""The default tools over an environment whose every command is a fresh shell (as Harbor's `exec` is): the bash
tool's session (cwd, exported variables) carries over however a command ends, and files are read and written
relative to it."""

import asyncio
import os
import shutil
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsv4.agent import ToolRegistry, sandbox_tools
from dsv4.agent.environment_shell import EnvironmentShell


class FreshShells:
    """A Harbor-like environment on the host: each exec is `sh -c` in `root` (as Docker's), nothing kept between
    them."""

    def __init__(self, root: Path):
        self.root, self.commands = root, []

    async def exec(self, command, cwd=None, env=None, timeout_sec=None, user=None):
        self.commands.append(command)
        p = await asyncio.create_subprocess_exec("sh", "-c", command, cwd=self.root, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout_sec)
        except BaseException:  # timed out, or cancelled: nothing left running
            os.killpg(p.pid, signal.SIGKILL)
            await p.wait()
            raise
        return SimpleNamespace(stdout=out.decode(), stderr=err.decode(), return_code=p.returncode)

    async def upload_file(self, source_path, target_path):
        shutil.copyfile(source_path, target_path)


@pytest.fixture
def tools(tmp_path):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    (tmp_path / "work").mkdir()
    env = FreshShells(tmp_path / "work")
    shell = EnvironmentShell(env, loop, state=str(tmp_path / "session"))
    yield ToolRegistry(sandbox_tools(shell)), shell, tmp_path
    asyncio.run_coroutine_threadsafe(_drain(), loop).result(30)  # a cancelled exec kills its process first
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


async def _drain():
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()), return_exceptions=True)


def test_the_session_carries_over_between_fresh_shells(tools):
    registry, _, root = tools
    assert registry.call("bash", '{"command": "mkdir -p sub && cd sub && export COLOR=blue"}').ok
    out = registry.call("bash", '{"command": "pwd; echo $COLOR ${BASH_VERSION:+in bash}"}')
    assert out.ok and f"{root}/work/sub\nblue in bash" in out.text
    # a command that exits, or fails to parse, still keeps what came before it
    failed = registry.call("bash", '{"command": "cd .. && export N=2 && exit 3"}')
    assert not failed.ok and "exit code: 3" in failed.text
    broken = registry.call("bash", '{"command": "if then fi"}')
    assert not broken.ok and "syntax error" in broken.text
    out = registry.call("bash", '{"command": "pwd; echo $COLOR $N"}')
    assert f"{root}/work\nblue 2" in out.text


def test_files_are_relative_to_the_sessions_directory(tools):
    registry, _, root = tools
    registry.call("bash", '{"command": "mkdir -p a && cd a"}')
    assert registry.call("write_file", '{"path": "deep/new.txt", "content": "one\\ntwo\\n"}').ok
    assert (root / "work" / "a" / "deep" / "new.txt").read_text() == "one\ntwo\n"
    assert registry.call("read_file", '{"path": "deep/new.txt", "offset": 1}').text == "two\n"
    missing = registry.call("read_file", '{"path": "nothing.txt"}')
    assert not missing.ok and "cannot read nothing.txt" in missing.text


def test_a_command_past_its_timeout_is_reported_as_timed_out(tools):
    registry, _, _ = tools
    out = registry.call("bash", '{"command": "sleep 5; echo late", "timeout": 0.5}')
    assert not out.ok and "(timed out, killed)" in out.text and "late" not in out.text


def test_stop_ends_the_command_in_flight_and_refuses_the_next(tools):
    registry, shell, _ = tools
    timer = threading.Timer(0.5, shell.stop)  # as Harbor's agent timeout cancels the run
    timer.start()
    out = registry.call("bash", '{"command": "sleep 10; echo done"}')
    timer.join()
    assert not out.ok and "the run was stopped while this command ran" in out.text
    assert "no further command is made" in registry.call("read_file", '{"path": "x"}').text

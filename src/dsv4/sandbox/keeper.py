"""The thread that owns a sandbox's host process for exactly as long as the sandbox lives."""

import subprocess
import threading

from dsv4.sandbox.cgroups import SandboxCgroup


class Keeper:
    """Starts the sandbox from a thread that lives exactly as long as the sandbox.

    `--die-with-parent` follows the *thread* that forked bwrap; spawning from the caller's thread would kill
    the sandbox when, say, a worker thread of a pool exits."""

    def __init__(self):
        self._done = threading.Event()

    def spawn(self, argv: list[str], cgroup: SandboxCgroup | None = None, **popen_kwargs) -> subprocess.Popen:
        """Popen from the keeper thread, which (when given) enters `cgroup` just for the fork."""
        box: list = []
        started = threading.Event()

        def run() -> None:
            try:
                if cgroup is not None:
                    cgroup.enter_current_thread()
                try:
                    box.append(subprocess.Popen(argv, **popen_kwargs))
                finally:
                    if cgroup is not None:
                        cgroup.leave_current_thread()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                box.append(e)
            started.set()
            self._done.wait()

        threading.Thread(target=run, name="dsv4-sandbox-keeper", daemon=True).start()
        started.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def release(self) -> None:
        self._done.set()

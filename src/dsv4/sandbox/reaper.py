"""Closes a sandbox once it has been idle longer than its `ttl_running_stop`."""

import threading
import time


class IdleReaper:
    """A daemon thread per sandbox; a call in progress counts as use."""

    def __init__(self, sandbox, ttl_s: float):
        self.sandbox, self.ttl_s = sandbox, ttl_s
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="dsv4-sandbox-reaper", daemon=True).start()

    def _watch(self) -> None:
        period = min(1.0, self.ttl_s / 4)
        while not self._stop.wait(period):
            idle = self.sandbox.in_flight == 0 and time.monotonic() - self.sandbox.last_used > self.ttl_s
            if idle:
                self.sandbox.close()
                return

    def stop(self) -> None:
        self._stop.set()

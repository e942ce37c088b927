"""A small thread pool whose workers are daemon threads, for a device's background I/O.

``concurrent.futures.ThreadPoolExecutor`` joins its workers when the interpreter exits,
so one worker stuck on a hung host (a frozen object store, a dead link) holds the whole
process for as long as its socket timeouts and retries last (minutes). A device the
engine has given up must never block the process exit (REQUIREMENTS R1); these workers
are simply abandoned with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class DaemonPool:
    """``submit(fn, *args)`` runs ``fn`` on one of ``workers`` daemon threads."""

    def __init__(self, workers: int, name: str = "pool") -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self.threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue a call; its Future gives the result or the exception."""
        future: Future = Future()
        self.jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        """Let the workers end once the queued calls are done; wait for them if asked."""
        for _ in self.threads:
            self.jobs.put(None)
        if wait:
            for t in self.threads:
                t.join()

"""An executor whose workers start in milliseconds: forked from a warm, thread-free server.

``LocalExecutor`` (workers.py) runs each worker as a fresh interpreter, which then
imports what it runs: a tenth to a third of a second per worker on a busy machine. A
short command (verifying a small set, restoring one file) paid that several times over.
``ForkServerExecutor`` keeps the safety of a fresh interpreter and drops the cost: once
per program it starts a server, a fresh interpreter with no threads and no half-taken
locks that imports the ``preload`` modules; each worker is a fork of that server, so it
starts with everything imported. The server runs in its own session (Ctrl-C reaches the
parent only, which ends its workers) and ends with the parent.

A worker is not the parent's child but the server's, so the parent watches it through a
pidfd: it waits for it and kills it without any risk of hitting a reused process id.
Where the interpreter cannot be run again (a user that may not enter its directory)
workers come from ``LocalExecutor`` instead, which then forks.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import parbackup
from parbackup.workers import (
    LocalExecutor,
    LocalWorker,
    Outbox,
    SendsThroughOutbox,
    die_with_parent,
    ended_unexpectedly,
    fork_serving,
    how_ended,
    name_process,
    shut_down,
)

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(parbackup.__file__)))
_SERVER = "import os, sys; from parbackup.forkserver import main; os._exit(main(sys.argv[1:]))"
"""The server's program. It leaves with ``os._exit``: tearing down an interpreter that
preloaded the engine took 40 to 120 ms, which the parent waited for at every exit; the
server holds nothing to flush or clean up (its workers leave the same way)."""


class ForkedWorker(SendsThroughOutbox):
    """A worker forked by the fork server (the ``Worker`` contract of workers.py)."""

    def __init__(
        self,
        name: str,
        pidfd: int | None,
        channel: Connection,
        server: subprocess.Popen | None = None,
    ) -> None:
        self.name, self.pidfd, self.channel, self.server = name, pidfd, channel, server
        self.outbox = Outbox(channel, name)

    def alive(self) -> bool:
        """False once it ended, or once its server did: a worker dies with its server
        (``die_with_parent``), and may take a moment to; whoever sees one worker of a
        killed server end must not count on the others."""
        if self.server is not None and self.server.poll() is not None:
            return False
        return not self.join(0)

    def why_ended(self, role: str) -> str:
        """A worker dies with its server: when the server ended, that is the cause."""
        if self.server is not None and (code := self.server.poll()) is not None:
            return (
                f"its {role} process ended with the fork server that started it "
                f"(pid {self.server.pid}, {how_ended(code)})"
            )
        return ended_unexpectedly(role)

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        shut_down(self.channel, self.outbox)

    def __del__(self) -> None:
        """A worker dropped without a join (killed and left, as the split scan's
        helper is) gives its pidfd back: a program running many backups kept one
        descriptor per scan."""
        try:
            if self.pidfd is not None:
                os.close(self.pidfd)
        except Exception:  # at interpreter exit: nothing left to release
            pass

    def join(self, timeout: float) -> bool:
        if self.pidfd is None:
            return True
        poller = select.poll()  # not select(): descriptors may be numbered past 1024
        poller.register(self.pidfd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            return False
        os.close(self.pidfd)
        self.pidfd = None
        return True


class ForkServerExecutor:
    """Every worker in its own local process, forked from a warm server (see above)."""

    _lock = threading.Lock()
    _servers: ClassVar[dict[tuple[str, ...], tuple[subprocess.Popen, socket.socket]]] = {}
    _cannot_run = False

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = tuple(preload)

    def warm(self) -> None:
        """Start the server now, without waiting for it: it gets ready (imports its
        modules) while the caller prepares the workers' work."""
        with self._lock, contextlib.suppress(OSError):
            self._server()

    def _server(self) -> socket.socket:
        known = self._servers.get(self.preload)
        if known is not None and known[0].poll() is None:
            return known[1]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        debug = os.environ.get("PARBACKUP_DEBUG_WORKERS", "") not in ("", "0")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(theirs.fileno()), *self.preload],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
                start_new_session=True,
            )
        except PermissionError:
            ours.close()
            ForkServerExecutor._cannot_run = True
            raise
        finally:
            theirs.close()
        if not self._servers:
            atexit.register(self.stop_servers)
        self._servers[self.preload] = (proc, ours)
        return ours

    @classmethod
    def stop_servers(cls) -> None:
        """End the servers (at exit): close their sockets, wait a moment for them."""
        with cls._lock:
            for proc, sock in cls._servers.values():
                sock.close()
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cls._servers.clear()

    def start(
        self, target: str, spec: Any, name: str = "", host: str = ""
    ) -> ForkedWorker | LocalWorker:
        if self._cannot_run:
            return LocalExecutor().start(target, spec, name, host)
        parent, child = socket.socketpair()
        request = pickle.dumps((target, dict(os.environ)))
        try:
            with self._lock:
                answer, fds, proc = b"", [], None
                for _attempt in range(2):  # a server that died is started again, once
                    with contextlib.suppress(OSError):
                        server = self._server()
                        proc = self._servers[self.preload][0]
                        socket.send_fds(server, [request], [child.fileno()])
                        answer, fds, _flags, _addr = socket.recv_fds(server, 64, 1)
                    if answer or self._cannot_run:
                        break
                    self._servers.pop(self.preload, None)
        finally:
            child.close()
        if not answer:
            parent.close()
            if self._cannot_run:
                return LocalExecutor().start(target, spec, name, host)
            raise OSError("cannot start a worker process (the fork server failed)")
        pidfd = fds[0] if fds else None  # none: the worker ended at once
        worker = ForkedWorker(name or target, pidfd, Connection(parent.detach()), proc)
        worker.send(spec)
        return worker


def main(argv: Sequence[str]) -> int:
    """The server: ``FD MODULE...``; forks a worker per request until FD closes.

    Each request is (target, environment) with the worker's channel attached; the
    answer is the worker's process id with a pidfd for it attached, opened here, where
    the id cannot yet have been reused.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    die_with_parent(os.getppid())  # the server, and so its workers, end with the program
    server = os.getpid()
    name_process("forkserver")
    for module in argv[1:]:
        importlib.import_module(module)
    control = socket.socket(fileno=int(argv[0]))
    while True:
        try:
            request, fds, _flags, _addr = socket.recv_fds(control, 1 << 22, 1)
        except OSError:
            return 1
        if not request:
            return 0
        target, env = pickle.loads(request)

        def prepare(env: dict = env) -> None:
            die_with_parent(server)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(env)

        pid = fork_serving(target, control, prepare, lambda fd=fds[0]: fd)
        for fd in fds:
            os.close(fd)
        try:
            pidfd = [os.pidfd_open(pid)]
        except ProcessLookupError:
            pidfd = []
        socket.send_fds(control, [str(pid).encode()], pidfd)
        for fd in pidfd:
            os.close(fd)

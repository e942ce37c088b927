"""Worker processes: where movers (engine/mover.py) and readers (readback/reader.py) run.

A worker is a top-level function ``fn(spec, channel)`` named ``"module:function"``. It
gets everything it needs in ``spec`` (device and source URLs, never open objects) and
talks to its parent only through ``channel``: picklable messages both ways. Nothing is
shared, so the same function can run in a local process (``LocalExecutor``, the default,
nothing to set up) or on another host (a cluster executor).

``LocalExecutor`` starts each worker as a fresh interpreter (``python -m
parbackup.workers``) joined to the parent by a socket pair. A fresh interpreter, not a
fork: the parent may hold threads (SSH transports, progress) and locks that a forked
child would inherit half-taken. Such a child is also never waited for at the parent's
exit, so a worker stuck on a hung device (a frozen NFS mount) cannot hold the program up
(REQUIREMENTS R1): the parent kills what it gives up and moves on.

Channel contract: ``send(obj)``, ``recv()`` (EOFError once the other side is gone),
``poll(timeout)``, ``fileno()``, ``close()`` — the ``multiprocessing.connection``
``Connection`` methods, so ``multiprocessing.connection.wait`` waits on many at once.
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
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, ClassVar, Protocol

import parbackup

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(parbackup.__file__)))


@dataclass(frozen=True, slots=True)
class Crashed:
    """A worker's last message when its function raised instead of returning."""

    error: str
    detail: str = ""


class Channel(Protocol):
    """Both ends of a worker's conversation (see the module docstring)."""

    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Worker(Protocol):
    """A running worker as its parent sees it."""

    name: str
    channel: Channel

    def alive(self) -> bool:
        """True while the worker runs."""

    def kill(self) -> None:
        """End the worker at once (it was given up); never raises, never waits."""

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the worker to end; True if it did."""


class Executor(Protocol):
    """Decides where workers run."""

    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> Worker:
        """Start ``target(spec, channel)``; ``host`` is where it should run ("" anywhere)."""


class LocalWorker:
    """A worker in a local child process (see ``LocalExecutor``)."""

    def __init__(self, name: str, proc: subprocess.Popen, channel: Connection) -> None:
        self.name, self.proc, self.channel = name, proc, channel

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.channel.close()

    def join(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


class LocalExecutor:
    """Every worker in its own local process (the default; nothing to set up)."""

    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> LocalWorker:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        debug = os.environ.get("PARBACKUP_DEBUG_WORKERS", "") not in ("", "0")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "parbackup.workers", target, str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to the parent, which ends its workers
            )
        finally:
            child.close()
        channel = Connection(parent.detach())
        channel.send(spec)
        return LocalWorker(name or target, proc, channel)


class ForkedWorker:
    """A worker forked by the fork server (see ``ForkServerExecutor``).

    Not this process's child, so it is watched through a pidfd: it can be waited for
    and killed without any risk of hitting a reused process id.
    """

    def __init__(self, name: str, pidfd: int | None, channel: Connection) -> None:
        self.name, self.pidfd, self.channel = name, pidfd, channel

    def alive(self) -> bool:
        return not self.join(0)

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.channel.close()

    def join(self, timeout: float) -> bool:
        if self.pidfd is None:
            return True
        if not select.select([self.pidfd], [], [], max(0.0, timeout))[0]:
            return False
        os.close(self.pidfd)
        self.pidfd = None
        return True


class ForkServerExecutor:
    """Every worker in its own local process, forked from a warm server.

    Like ``LocalExecutor``, but a worker starts in milliseconds instead of paying for a
    fresh interpreter and its imports (which made short commands, such as verifying a
    small set, several times slower than with threads). The server is a fresh
    interpreter (``python -m parbackup.workers --fork-server``: no threads, no
    half-taken locks, so forking it is safe), started once per program with the
    ``preload`` modules imported, in its own session (Ctrl-C goes to the parent only);
    it ends when this process does. Each worker gets this process's environment as it
    is at ``start``.
    """

    _lock = threading.Lock()
    _servers: ClassVar[dict[tuple[str, ...], tuple[subprocess.Popen, socket.socket]]] = {}

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
        try:
            argv = ["-m", "parbackup.workers", "--fork-server", str(theirs.fileno())]
            proc = subprocess.Popen(
                [sys.executable, *argv, *self.preload],
                pass_fds=(theirs.fileno(),),
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if _debug() else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        if not self._servers:
            atexit.register(self.stop_servers)
        self._servers[self.preload] = (proc, ours)
        return ours

    @classmethod
    def stop_servers(cls) -> None:
        """End the fork servers (at exit): close their sockets, wait a moment for them."""
        with cls._lock:
            for proc, sock in cls._servers.values():
                sock.close()
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cls._servers.clear()

    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> ForkedWorker:
        parent, child = socket.socketpair()
        request = pickle.dumps((target, dict(os.environ)))
        try:
            with self._lock:
                answer = b""
                for _attempt in range(2):  # a server that died is started again, once
                    with contextlib.suppress(OSError):
                        server = self._server()
                        socket.send_fds(server, [request], [child.fileno()])
                        answer = server.recv(64)
                    if answer:
                        break
                    self._servers.pop(self.preload, None)
        finally:
            child.close()
        if not answer:
            parent.close()
            raise OSError("cannot start a worker process (the fork server failed)")
        pid = int(answer)
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None  # it ended already
        channel = Connection(parent.detach())
        worker = ForkedWorker(name or target, pidfd, channel)
        try:
            channel.send(spec)
        except OSError:
            worker.kill()
        return worker


def _child_env() -> dict[str, str]:
    """This environment, with this package importable in a child interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _debug() -> bool:
    return os.environ.get("PARBACKUP_DEBUG_WORKERS", "") not in ("", "0")


def fork_server(fd: int, preload: Sequence[str]) -> int:
    """``python -m parbackup.workers --fork-server FD MODULE...``: fork workers on request.

    Each request on the socket FD is (target, environment) with the worker's channel
    attached; the answer is the worker's process id. Ends when the socket closes.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    for module in preload:
        importlib.import_module(module)
    control = socket.socket(fileno=fd)
    while True:
        try:
            request, fds, _flags, _addr = socket.recv_fds(control, 1 << 22, 1)
        except OSError:
            return 1
        if not request:
            return 0
        target, env = pickle.loads(request)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
                os.environ.clear()
                os.environ.update(env)
                code = serve(target, Connection(fds[0]))
            finally:
                os._exit(code)
        for f in fds:
            os.close(f)
        control.send(str(pid).encode())


def wait_any(channels: Sequence[Channel], timeout: float | None) -> list[Channel]:
    """The channels among ``channels`` with a message (or an end) ready."""
    return wait(list(channels), timeout)  # type: ignore[arg-type]


def resolve(target: str) -> Callable[[Any, Channel], None]:
    """The function ``"package.module:function"`` names."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def serve(target: str, channel: Connection) -> int:
    """Run one worker in this process: receive its spec, call it, report a crash."""
    try:
        spec = channel.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return 1
    try:
        resolve(target)(spec, channel)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the parent is gone or gave this worker up
    except BaseException as exc:  # report, never print a traceback on the user's terminal
        with contextlib.suppress(Exception):
            channel.send(Crashed(f"internal error: {exc!r}", traceback.format_exc()))
        return 1
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m parbackup.workers TARGET FD``: the child side of ``LocalExecutor``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if argv[0] == "--fork-server":
        return fork_server(int(argv[1]), argv[2:])
    target, fd = argv[0], int(argv[1])
    return serve(target, Connection(fd))


if __name__ == "__main__":
    # Run through the imported module, so the message classes pickle under their real
    # module name (not ``__main__``) and the parent can unpickle them.
    from parbackup import workers

    sys.exit(workers.main(sys.argv[1:]))

"""Worker processes: where movers (engine/mover.py) and readers (readback/reader.py) run.

A worker is a top-level function ``fn(spec, channel)`` named ``"module:function"``. It
gets everything it needs in ``spec`` (device and source URLs, never open objects) and
talks to its parent only through ``channel``: picklable messages both ways. Nothing is
shared, so the same function can run in a local process (``LocalExecutor``, the default,
nothing to set up) or on another host (a cluster executor).

``LocalExecutor`` starts each worker as a fresh interpreter joined to the parent by a
socket pair. A fresh interpreter, not a fork: the parent may hold threads (SSH
transports, progress) and locks that a forked child would inherit half-taken. Such a
child is also never waited for at the parent's exit, so a worker stuck on a hung device
(a frozen NFS mount) cannot hold the program up (REQUIREMENTS R1): the parent kills
what it gives up and moves on. Only where the interpreter cannot be run again (a user
that may not enter its directory) is the worker forked instead.

Channel contract: ``send(obj)``, ``recv()`` (EOFError once the other side is gone),
``poll(timeout)``, ``fileno()``, ``close()`` — the ``multiprocessing.connection``
``Connection`` methods, so ``multiprocessing.connection.wait`` waits on many at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import parbackup

_CHILD = (
    "import os, sys; from parbackup.workers import main; code = main(sys.argv[1:]);"
    " sys.stdout.flush(); sys.stderr.flush(); os._exit(code)"
)
"""The child's program: through the imported module, so message classes pickle under
their real module name (not ``__main__``) and the parent can unpickle them. Once the
worker has returned (its device closed, its last answer sent) the process leaves at
once, as a forked worker does: tearing the interpreter down took 40-130 ms that the end
of every backup waited for (``Fleet.stop``)."""
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(parbackup.__file__)))
log = logging.getLogger(__name__)


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
    """A running worker as its parent sees it.

    ``send`` never blocks: messages go out in order from a thread of their own, so a
    parent busy sending work can never deadlock with a worker busy sending results.
    ``channel`` is for receiving (``poll``, ``recv``, ``wait_any``).
    """

    name: str
    channel: Channel

    def send(self, msg: Any) -> None:
        """Queue a message for the worker (dropped once the worker is gone)."""

    def delivered(self) -> float:
        """When the last message sent reached the worker's channel (``time.monotonic``;
        0.0 before any). A worker owes no answer for a message still on its way (a large
        ``Work`` pickled and sent while the machine is busy, or over a slow link): its
        silence counts from here, not from when the message was queued."""

    def alive(self) -> bool:
        """True while the worker runs."""

    def kill(self) -> None:
        """End the worker at once (it was given up); never raises, never waits. Also
        what releases an ended worker's channel and send thread: call it once nothing
        more is to be read from the worker, whether or not it still runs."""

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the worker to end; True if it did."""

    def why_ended(self, role: str) -> str:
        """Why its channel closed unasked, as a report says it ("its mover process
        ended unexpectedly"), with the cause when the parent can tell it."""


def ended_unexpectedly(role: str, returncode: int | None = None) -> str:
    """The report's words for a ``role`` process that ended unasked (``why_ended``)."""
    how = how_ended(returncode)
    return f"its {role} process ended unexpectedly" + (f" ({how})" if how else "")


def how_ended(returncode: int | None) -> str:
    """Words for a return code: "killed by SIGKILL", "exit status 3", "" if unknown."""
    if returncode is None:
        return ""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Executor(Protocol):
    """Decides where workers run."""

    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> Worker:
        """Start ``target(spec, channel)``; ``host`` is where it should run ("" anywhere)."""


class Outbox:
    """Sends a channel's messages in order from a daemon thread (``Worker.send``).

    The thread owns the channel's sending side and closes the channel after ``close()``
    (the worker was given up): closing it from another thread while a large message is
    half sent would break the send in the middle.
    """

    def __init__(self, channel: Channel, name: str) -> None:
        self.channel = channel
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.delivered = 0.0
        """When the last message was handed whole to the channel (``Worker.delivered``)."""
        self.thread = threading.Thread(target=self._run, name=f"send-{name}", daemon=True)
        self.thread.start()

    def put(self, msg: Any) -> None:
        self.queue.put(msg)

    def close(self) -> None:
        self.queue.put(_CLOSE)

    def _run(self) -> None:
        gone = False  # the worker is gone: nothing more to say, but what it sent before
        while (msg := self.queue.get()) is not _CLOSE:  # may still be read: keep it open
            if gone:
                continue
            try:
                self.channel.send(msg)
                self.delivered = time.monotonic()
            except (OSError, ValueError):
                gone = True
        with contextlib.suppress(OSError):
            self.channel.close()


_CLOSE = object()


class SendsThroughOutbox:
    """``Worker.send`` and ``Worker.delivered`` for a worker whose messages go out
    through its ``outbox``."""

    outbox: Outbox

    def send(self, msg: Any) -> None:
        self.outbox.put(msg)

    def delivered(self) -> float:
        return self.outbox.delivered


def shut_down(channel: Channel, outbox: Outbox) -> None:
    """Give up a worker's channel: wake a send blocked on it, then let the outbox's thread
    close it and end. Shut down first: once the thread has closed the channel, its
    descriptor number may already belong to something else."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=channel.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the fd stays the channel's
    outbox.close()


class LocalWorker(SendsThroughOutbox):
    """A worker in a local child process (see ``LocalExecutor``)."""

    def __init__(self, name: str, proc: subprocess.Popen | _Forked, channel: Connection) -> None:
        self.name, self.proc, self.channel = name, proc, channel
        self.outbox = Outbox(channel, name)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def why_ended(self, role: str) -> str:
        return ended_unexpectedly(role, self.proc.poll())

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        shut_down(self.channel, self.outbox)

    def join(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


class _Forked:
    """A forked worker, for when a fresh interpreter cannot be started (Popen-like)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    @classmethod
    def start(cls, target: str, child: socket.socket, parent: socket.socket) -> _Forked:
        def prepare() -> None:
            for sig in (signal.SIGTERM, signal.SIGHUP):  # not the parent's handlers
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(os.getppid())
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        return cls(fork_serving(target, parent, prepare, child.detach))

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("worker", timeout)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]


class LocalExecutor:
    """Every worker in its own local process (the default; nothing to set up)."""

    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> LocalWorker:
        proc, channel = _spawn(target)
        channel.send(spec)
        return LocalWorker(name or target, proc, channel)


def _spawn(target: str) -> tuple[subprocess.Popen | _Forked, Connection]:
    """A worker process for ``target`` and its channel; the spec is still to be sent."""
    parent, child = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    debug = os.environ.get("PARBACKUP_DEBUG_WORKERS", "") not in ("", "0")
    try:
        proc: subprocess.Popen | _Forked = subprocess.Popen(
            [sys.executable, "-c", _CHILD, target, str(child.fileno()), str(os.getpid())],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None if debug else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the parent, which ends its workers
        )
    except PermissionError:
        # The interpreter cannot be run again as this user (it lives in a directory
        # only its owner may enter, e.g. after dropping privileges): fork instead.
        proc = _Forked.start(target, child, parent)
    finally:
        child.close()
    return proc, Connection(parent.detach())


def wait_any(channels: Sequence[Channel], timeout: float | None) -> list[Channel]:
    """The channels among ``channels`` with a message (or an end) ready."""
    return wait(list(channels), timeout)  # type: ignore[arg-type]


def resolve(target: str) -> Callable[[Any, Channel], None]:
    """The function ``"package.module:function"`` names."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def serve(target: str, channel: Connection) -> int:
    """Run one worker in this process: import what it runs, receive its spec (a worker
    started ahead of its work is ready when the spec comes), call it, report a crash."""
    failed: BaseException | None = None
    name_process(target.rsplit(":", 1)[-1])
    try:
        run = resolve(target)
    except BaseException as exc:  # reported once the parent has sent the spec
        failed = exc
    try:
        spec = channel.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return 1
    try:
        if failed is not None:
            raise failed
        profile_dir = os.environ.get("PARBACKUP_PROFILE_WORKERS", "")
        if profile_dir:  # a developer's tool: one cProfile file per worker
            import cProfile

            name = f"{target.rsplit(':', 1)[-1]}-{os.getpid()}.prof"
            cProfile.runctx("run(spec, channel)", globals(), locals(),
                            os.path.join(profile_dir, name))  # fmt: skip
        else:
            run(spec, channel)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the parent is gone or gave this worker up
    except BaseException as exc:  # report, never print a traceback on the user's terminal
        with contextlib.suppress(Exception):
            channel.send(Crashed(f"internal error: {exc!r}", traceback.format_exc()))
        return 1
    return 0


def fork_serving(
    target: str, drop: socket.socket, prepare: Callable[[], None], channel: Callable[[], int]
) -> int:
    """Fork a worker that serves ``target`` (``serve``) on the connection whose descriptor
    ``channel()`` gives, after closing ``drop`` (the forking side's end) and ``prepare()``
    (its signals, its parent); the worker's pid. The worker has a session (and so a
    scheduler autogroup) of its own, as one LocalExecutor starts has: workers sharing the
    parent's would share one CPU share on a loaded machine (two movers ran at half their
    speed). It leaves with ``os._exit``, never running the parent's cleanup."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            drop.close()
            os.setsid()
            prepare()
            code = serve(target, Connection(channel()))
        finally:
            os._exit(code)
    return pid


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies, however it dies.

    A worker must never outlive the program that started it: a mover still writing
    after its backup was killed (SIGKILL) would put bytes on a device behind the next
    run's clean-up. ``PR_SET_PDEATHSIG`` (Linux); if the parent is already gone, leave.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def name_process(name: str) -> None:
    """Give this process the name ``ps``, ``top`` and profilers show (its ``comm``, 15
    bytes at most: ``move``, ``scan_part``): every worker is otherwise one more
    ``python3``, and a forked one even repeats its server's command line. Linux's
    ``PR_SET_NAME``; nothing where there is none."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def main(argv: Sequence[str]) -> int:
    """The child side of ``LocalExecutor``: ``TARGET FD PARENT_PID``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    target, fd = argv[0], int(argv[1])
    if len(argv) > 2:
        die_with_parent(int(argv[2]))
    return serve(target, Connection(fd))

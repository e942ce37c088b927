"""The task side of ``--cluster`` (parbackup/cluster.py): what runs on a Dask worker.

``run_remote`` is the task the controller submits for each worker (a mover, a reader, a
source's file server): it calls the controller back over TCP (authenticated both ways
with the run's key), receives the worker's spec, runs the worker in a process of its own
forked from a warm server this Dask worker keeps (forkserver.py), and relays the frames
of that process's channel over the connection until either side ends. When the
controller goes, the process is killed, as local workers die with their parent.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import queue
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from parbackup.errors import UsageError
from parbackup.forkserver import ForkServerExecutor
from parbackup.readback import relay
from parbackup.sources.hosted import HOST_ENV

END_FRAME = b"\x00parbackup:end"
"""The last frame of a worker that ended by itself (never a pickle, which starts 0x80)."""
HANDSHAKE_SECONDS = 10.0


def split_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` or ``HOST:PORT`` -> (HOST, PORT)."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError as exc:
        raise UsageError(f"not a cluster address: {address!r} (tcp://HOST:PORT)") from exc


def run_remote(target: str, wid: str, key: bytes, hosts: list[str], port: int) -> int:
    """Call the controller back, then run ``target`` in a local process and relay its
    channel over the connection; the exit code of that process (1 if never started)."""
    distributed = importlib.import_module("distributed")
    where = ""
    with contextlib.suppress(Exception):
        distributed.secede()  # a mover runs for the whole backup: hold no thread slot
    with contextlib.suppress(Exception):
        me = distributed.get_worker()
        where = me.address
        os.environ[HOST_ENV] = f"{me.name} {split_address(where)[0]}"  # sources/hosted.py
        scheduler_host = split_address(me.scheduler.address)[0]
        hosts = [*hosts, scheduler_host]
    called = _call_back(hosts, port, key, wid, where)
    if called is None:
        return 1
    link, host = called
    os.environ[relay.CALLBACK_ENV.format(port=port)] = host  # where a relay sink calls
    try:
        spec = link.recv()
    except (EOFError, OSError):
        return 1
    worker = _local_executor(target).start(target, spec, name=target)
    threading.Thread(target=_downstream, args=(link, worker), daemon=True).start()
    try:
        while True:
            link.send_bytes(worker.channel.recv_bytes())
    except (EOFError, OSError):
        pass
    if not worker.join(5.0):
        worker.kill()
    with contextlib.suppress(OSError):
        link.send_bytes(END_FRAME)
    with contextlib.suppress(OSError):
        link.close()
    return 0


def _local_executor(target: str) -> ForkServerExecutor:
    """Where a task starts its process: forked from a server on this Dask worker that
    has ``target``'s module imported (forkserver.py; it lives as long as the worker, so
    only the first run on a worker waits for the imports)."""
    executor = ForkServerExecutor(preload=_preload(target.partition(":")[0]))
    _KEEPER.run(executor.warm)  # the server is started by the keeper, never by a task
    return executor


_DEVICE_KINDS = {"parbackup.devices.sftp": "paramiko", "parbackup.devices.s3": "boto3"}
"""Imported by the servers of movers and readers too, where their extras are installed
(module: what it needs): a mover of an SFTP device would otherwise import paramiko
itself, a quarter of a second each time."""


@functools.cache
def _preload(module: str) -> tuple[str, ...]:
    """The modules a fork server for ``module``'s workers imports before forking."""
    if module not in ("parbackup.engine.mover", "parbackup.readback.reader"):
        return (module,)
    usable = [kind for kind, needs in _DEVICE_KINDS.items() if importlib.util.find_spec(needs)]
    return (module, *usable)


def warm(target: str) -> None:
    """Start the fork server for ``target`` on this worker now (``DaskExecutor.start``
    asks every worker once per run, without waiting)."""
    _local_executor(target)


class _Keeper:
    """One thread that lives as long as this Dask worker and starts its fork servers.

    A server dies with the *thread* that started it (``PR_SET_PDEATHSIG`` follows the
    thread, forkserver.py): started by a task's thread, it would take every process
    forked from it down when that one task ended.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` in the keeper thread and wait for it (errors are its own)."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, name="pb-forkservers")
                self.thread.daemon = True
                self.thread.start()
        done = threading.Event()
        self.jobs.put((job, done))
        done.wait()

    def _serve(self) -> None:
        while True:
            job, done = self.jobs.get()
            with contextlib.suppress(Exception):
                job()
            done.set()


_KEEPER = _Keeper()


def _downstream(link: Connection, worker: Any) -> None:
    """Controller -> process; when the controller goes (or gave the worker up), end it."""
    try:
        while True:
            worker.channel.send_bytes(link.recv_bytes())
    except (EOFError, OSError):
        pass
    if worker.alive():
        worker.kill()


def _call_back(
    hosts: list[str], port: int, key: bytes, wid: str, where: str
) -> tuple[Connection, str] | None:
    """An authenticated connection to the controller (first host that answers) and that
    host, or None."""
    for host in dict.fromkeys(hosts):
        try:
            sock = socket.create_connection((host, port), timeout=HANDSHAKE_SECONDS)
        except OSError:
            continue
        sock.settimeout(None)  # a Connection reads its descriptor blocking
        link = Connection(sock.detach())
        timer = threading.Timer(HANDSHAKE_SECONDS, shut, (link,))
        timer.start()
        try:
            answer_challenge(link, key)
            deliver_challenge(link, key)
            link.send_bytes(f"{wid} {where}".encode())
        except Exception:
            with contextlib.suppress(OSError):
                link.close()
            continue
        finally:
            timer.cancel()
        return link, host
    return None


def shut(conn: Connection) -> None:
    """Shut a connection down both ways (wakes a thread blocked on it); never raises."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=conn.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()

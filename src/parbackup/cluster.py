"""Workers on a Dask cluster: ``--cluster ADDRESS`` (REQUIREMENTS C2, docs/CLUSTER.md).

``DaskExecutor`` starts each worker (a mover, a reader: ``fn(spec, channel)``, see
workers.py) as a Dask task that runs the very same function in a local process on a Dask
worker, next to the device. Nothing else changes for the engine: it gets a ``Worker``
whose channel is a local socket pair, as with ``LocalExecutor``. On the worker the
function runs in a process forked from a warm server (forkserver.py), kept by the Dask
worker for its lifetime.

The data path never touches Dask or the controller: the worker reads its sources and
writes its device itself. Only the small messages travel, over one TCP connection per
worker from the task back to the controller, which listens on an address the workers can
reach. The connection is authenticated both ways with a random key of the run (the
``multiprocessing.connection`` HMAC challenge) carried in the task's arguments, and
carries the channel's frames unchanged; a relay thread at each end copies them between
the connection and the socket pair of the worker process.

Placement: a device URL's ``?host=NAME`` option names the Dask worker it is attached to
(its ``--name``, or its host address); its worker runs only there. Devices that name no
host (SFTP, S3, a shared mount) are spread over the workers in turn.

Failures: a Dask worker lost (killed, its host gone) closes the connection; the engine
then reads ``Crashed("... lost its cluster worker ...")``, the same as a failed device,
and replans its work over the others. A lost scheduler ends every worker of the run the
same way, so the run fails with nothing marked complete. A task that Dask runs a second
time (it retries tasks of a lost worker) is refused: a worker runs once.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from parbackup.clustertask import (
    END_FRAME,
    HANDSHAKE_SECONDS,
    run_remote,
    shut,
    split_address,
    warm,
)
from parbackup.devices.url import parse_url
from parbackup.entries import Entries
from parbackup.errors import ClusterError, SourceError, UsageError
from parbackup.readback.relay import RelaySinkSpec
from parbackup.readback.relay import serve as serve_relay
from parbackup.readback.sinks import DirectorySinkSpec
from parbackup.selection import Excluded
from parbackup.sources import hostscan
from parbackup.sources.base import ErrorFunc, SourceSpec
from parbackup.sources.hosted import ServeSpec, served
from parbackup.workers import Crashed, Outbox, SendsThroughOutbox, ended_unexpectedly

_WATCH_SECONDS = 0.2


def _distributed() -> Any:
    """The ``distributed`` package, or a usage error that says how to get it."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise UsageError("--cluster needs Dask: pip install 'parbackup[cluster]'") from exc


def host_of(spec: Any) -> str:
    """The host a worker's spec asks for: its device URL's ``?host=`` ("" anywhere)."""
    url = getattr(spec, "url", "")
    if not url:
        return ""
    with contextlib.suppress(UsageError):
        return parse_url(url).params.get("host", "")
    return ""


def _route_to(host: str, port: int) -> str:
    """This machine's address on the way to ``host`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


# -- the controller's side ---------------------------------------------------------------
class DaskWorker(SendsThroughOutbox):
    """A worker running in a Dask task, as the engine sees it (``workers.Worker``)."""

    def __init__(self, name: str, why_lost: Callable[[], str] = str) -> None:
        mine, relay = socket.socketpair()
        self.name = name
        self.channel = Connection(mine.detach())
        self.relay = Connection(relay.detach())
        self.outbox = Outbox(self.channel, name)
        self.lock = threading.Lock()  # frames into the relay end: whole, one at a time
        self.link: Connection | None = None
        self.where = ""
        self.future: Any = None
        self.killed = False
        self.ended = threading.Event()
        self.why_lost = why_lost
        """Why the cluster let a link end, if it knows (a lost scheduler), else ''."""

    # -- Worker ----------------------------------------------------------------------------
    def alive(self) -> bool:
        return not self.ended.is_set()

    def why_ended(self, role: str) -> str:
        return self.why_lost() or ended_unexpectedly(role)

    def kill(self) -> None:
        self.killed = True
        self.outbox.close()
        if self.future is not None:
            with contextlib.suppress(Exception):
                self.future.cancel()
        self.drop()

    def join(self, timeout: float) -> bool:
        return self.ended.wait(timeout)

    # -- the relay -------------------------------------------------------------------------
    def attach(self, link: Connection, where: str) -> None:
        """The task called back: relay frames both ways until either side ends."""
        self.link, self.where = link, where
        threading.Thread(target=self._down, name=f"down-{self.name}", daemon=True).start()
        threading.Thread(target=self._up, name=f"up-{self.name}", daemon=True).start()

    def fail(self, reason: str) -> None:
        """End the worker as failed: the engine reads ``Crashed(reason)``, then the end."""
        if self.ended.is_set():
            return
        with contextlib.suppress(OSError), self.lock:
            self.relay.send(Crashed(reason))
        self.drop()

    def drop(self) -> None:
        """Close the connection (the remote side ends its process) and the relay end."""
        if self.link is not None:
            shut(self.link)
        with self.lock:
            shut(self.relay)
        self.ended.set()

    def _down(self) -> None:
        """Engine -> task: the spec, then every message (raw frames)."""
        assert self.link is not None
        try:
            while True:
                self.link.send_bytes(self.relay.recv_bytes())
        except (EOFError, OSError):
            pass

    def _up(self) -> None:
        """Task -> engine; an end without ``END_FRAME`` is a lost worker, any end while
        the scheduler is lost is that."""
        assert self.link is not None
        clean = False
        try:
            while True:
                data = self.link.recv_bytes()
                if data == END_FRAME:
                    clean = True
                    break
                with self.lock:
                    self.relay.send_bytes(data)
        except (EOFError, OSError):
            pass
        if not self.killed:
            # A clean end (the process ended) may be the lost scheduler's doing too: a Dask
            # worker that lost it closes, and at its exit its fork server and the processes
            # forked from it end first, while the task still relays their end
            why = self.why_lost()
            if why or not clean:
                self.fail(why or f"lost its cluster worker {self.where}".rstrip())
        self.drop()


class DaskExecutor:
    """Every worker in a Dask task, placed by its device's ``?host=`` (module docstring).

    ``listen`` is the ``HOST[:PORT]`` the controller listens on for its workers' calls
    back (default: every address, a free port); the workers try the host given there,
    else this machine's address toward the scheduler, else the scheduler's host.
    """

    def __init__(self, address: str, *, listen: str = "", timeout: float = 30.0) -> None:
        distributed = _distributed()
        self.address = address
        sched_host, sched_port = split_address(address)
        try:
            self.client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the cluster scheduler at {address}: {exc}") from exc
        # Dask's own log lines (tracebacks of its cancelled coroutines when the scheduler
        # dies) are not for the user: what failed is said once, per device, by this module
        for handler in logging.getLogger("distributed").handlers:
            handler.setLevel(logging.CRITICAL)
        bind_host, _, bind_port = listen.rpartition(":") if ":" in listen else (listen, "", "0")
        try:
            self.server = socket.create_server((bind_host, int(bind_port or 0)), backlog=64)
        except (OSError, ValueError) as exc:
            self.client.close()
            raise UsageError(f"--cluster-listen {listen}: cannot listen there ({exc})") from exc
        self.port = self.server.getsockname()[1]
        self.hosts = [bind_host] if bind_host else [_route_to(sched_host, sched_port)]
        self.key = os.urandom(32)
        self.pending: dict[str, DaskWorker] = {}
        self.workers: list[DaskWorker] = []
        self.turn = itertools.count()
        self.lost = ""
        self.prefer = ""
        self.warmed: set[str] = set()
        self.sinks: dict[str, DirectorySinkSpec] = {}
        """Restore targets written here for readers on the hosts, by token (relay)."""
        """Where devices that name no host run: the host of the sources, if only one."""
        self.closed = threading.Event()
        threading.Thread(target=self._accept, name="cluster-accept", daemon=True).start()
        threading.Thread(target=self._watch, name="cluster-watch", daemon=True).start()

    # -- Executor --------------------------------------------------------------------------
    def start(self, target: str, spec: Any, name: str = "", host: str = "") -> DaskWorker:
        worker = DaskWorker(name or target, self.scheduler_lost)
        worker.send(spec)
        self.workers.append(worker)
        if self.lost:
            worker.fail(self.lost)
            return worker
        try:
            where = self.place(host or host_of(spec))
        except ClusterError as exc:
            worker.fail(str(exc))
            return worker
        if target not in self.warmed:  # every worker gets its fork server ready
            self.warmed.add(target)
            threading.Thread(target=self._warm, args=(target,), daemon=True).start()
        wid = os.urandom(16).hex()
        self.pending[wid] = worker
        worker.future = self.client.submit(
            run_remote,
            target,
            wid,
            self.key,
            self.hosts,
            self.port,
            key=f"parbackup-{worker.name}-{wid}",
            workers=where,
            allow_other_workers=False,
            pure=False,
            retries=0,
        )
        worker.future.add_done_callback(lambda f, w=worker: self._task_ended(w, f))
        return worker

    def _warm(self, target: str) -> None:
        with contextlib.suppress(Exception):
            self.client.run(warm, target)

    def place(self, host: str) -> list[str]:
        """The Dask worker addresses a worker may run on: those of ``host``, else the
        next worker in turn; ClusterError when there is none."""
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        except Exception as exc:
            raise ClusterError(f"the cluster scheduler at {self.address}: {exc}") from exc
        host = host or self.prefer
        if host:
            mine = sorted(a for a, w in info.items() if host in (w.get("name"), w.get("host")))
            if not mine:
                raise ClusterError(f"no cluster worker on host {host!r}")
            return mine
        if not info:
            raise ClusterError(f"the cluster at {self.address} has no worker")
        everyone = sorted(info)
        return [everyone[next(self.turn) % len(everyone)]]

    # -- sources on hosts (SourceSpec.host) ----------------------------------------------
    def serve_sources(self, specs: list[SourceSpec]) -> list[SourceSpec]:
        """Start a file server for every tree on a host, for the run; the specs with
        where the other hosts read them (``via``). Devices that name no host run on the
        sources' host when they all lie on one (their bytes then never cross a link)."""
        hosts = {s.host for s in specs if s.host}
        if len(hosts) == 1 and all(s.host for s in specs):
            self.prefer = next(iter(hosts))
        out = []
        for i, spec in enumerate(specs):
            if not spec.host:
                out.append(spec)
                continue
            key = os.urandom(32)
            worker = self.start(
                "parbackup.sources.hosted:serve",
                ServeSpec(spec.record_root, key),
                name=f"source-{i}",
                host=spec.host,
            )
            where = f"{spec.display} on host {spec.host}"
            if not worker.channel.poll(HANDSHAKE_SECONDS * 3):
                worker.kill()
                raise SourceError(f"{where}: its file server did not start")
            try:
                answer = worker.channel.recv()
            except (EOFError, OSError) as exc:
                raise SourceError(f"{where}: its file server did not start") from exc
            if isinstance(answer, Crashed):
                raise SourceError(f"{where}: {answer.error}")
            ip = split_address(worker.where)[0]
            out.append(served(spec, f"{ip}:{answer[1]}/{key.hex()}"))
        return out

    def scan_source(
        self, spec: SourceSpec, out: Entries, index: int, on_error: ErrorFunc
    ) -> Excluded:
        """Scan a tree on its host, as parallel tasks there (sources/hostscan.py), into
        ``out`` as source ``index``; what its selection left out."""
        where = f"{spec.display} on host {spec.host}"
        try:
            workers = self.place(spec.host)
            pin = {"workers": workers, "allow_other_workers": False, "pure": False}
            children = self.client.submit(hostscan.top_level, spec, **pin).result()
            if children is None:
                pieces = {
                    hostscan.ROOT: self.client.submit(hostscan.scan_whole, spec, **pin).result()
                }
            else:
                threads = sum(w.get("nthreads", 1) for a, w in self._info().items() if a in workers)
                tasks = [
                    (names, self.client.submit(hostscan.scan_names, spec, names, **pin))
                    for names in hostscan.groups(children, 2 * max(1, threads))
                ]
                pieces = {}
                for names, future in tasks:
                    pieces.update(zip(names, future.result(), strict=True))
        except ClusterError as exc:
            raise SourceError(f"{where}: {exc}") from exc
        except Exception as exc:  # a lost worker or scheduler, an error on the host
            raise SourceError(f"{where}: could not scan it there: {exc}") from exc
        return hostscan.merge(spec, out, index, children, pieces, on_error)

    def _info(self) -> dict[str, Any]:
        return self.client.scheduler_info(n_workers=-1)["workers"]

    def relay_sink(self, spec: Any) -> Any:
        """A reader's sink spec as it runs on a host: a restore target is written here,
        through the relay (readback/relay.py), so it need not be shared by the hosts."""
        if not isinstance(spec, DirectorySinkSpec):
            return spec
        token = os.urandom(16).hex()
        self.sinks[token] = spec
        hosts = (*self.hosts, split_address(self.address)[0])
        return RelaySinkSpec(hosts, self.port, self.key, token)

    def close(self) -> None:
        """End every worker still running, stop listening, leave the cluster."""
        self.closed.set()
        for worker in self.workers:
            if worker.alive():
                worker.kill()
        with contextlib.suppress(OSError):
            self.server.close()
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)

    # -- threads ---------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                sock, _peer = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._greet, args=(sock,), daemon=True).start()

    def _greet(self, sock: socket.socket) -> None:
        """Authenticate a call back (both ways) and hand it to its worker, once."""
        link = Connection(sock.detach())
        timer = threading.Timer(HANDSHAKE_SECONDS, shut, (link,))
        timer.start()
        try:
            deliver_challenge(link, self.key)
            answer_challenge(link, self.key)
            wid, _, where = link.recv_bytes(512).decode().partition(" ")
        except Exception:  # a stranger, a wrong key, a dead peer: drop it
            timer.cancel()
            with contextlib.suppress(OSError):
                link.close()
            return
        timer.cancel()
        if wid.startswith("sink:"):  # a reader's relay (readback/relay.py), once
            target = self.sinks.pop(wid.removeprefix("sink:"), None)
            if target is not None:
                serve_relay(link, target)
            with contextlib.suppress(OSError):
                link.close()
            return
        worker = self.pending.pop(wid, None)
        if worker is None or worker.ended.is_set():  # a second run of the task, or too late
            with contextlib.suppress(OSError):
                link.close()
            return
        worker.attach(link, where)

    def _task_ended(self, worker: DaskWorker, future: Any) -> None:
        """The task ended; before calling back, it failed (or Dask gave it up)."""
        if worker.link is None and not worker.ended.is_set():
            worker.fail(
                f"its cluster task ended ({future.status}) before it could call this program "
                f"back at {'/'.join(self.hosts)} port {self.port} (see --cluster-listen)"
            )

    def scheduler_lost(self) -> str:
        """Why the scheduler is gone, or '' while it answers. A link that ends may be the
        first sign of a killed scheduler (its workers go with it): its port is asked at
        once rather than waiting for the client to notice."""
        if not self.lost:
            try:
                socket.create_connection(split_address(self.address), timeout=2.0).close()
            except OSError:
                self.lost = f"lost the cluster scheduler at {self.address}"
        return self.lost

    def _watch(self) -> None:
        """A lost scheduler fails every worker of the run (and every later start)."""
        while not self.closed.wait(_WATCH_SECONDS):
            status = str(getattr(self.client, "status", "running"))
            if status not in ("running", "newly-created"):
                self.lost = f"lost the cluster scheduler at {self.address}"
                for worker in self.workers:
                    worker.fail(self.lost)
                return


@contextlib.contextmanager
def cluster_executor(address: str, listen: str = "") -> Iterator[DaskExecutor | None]:
    """A ``DaskExecutor`` for ``address`` for the duration; None (local) when empty."""
    if not address:
        yield None
        return
    executor = DaskExecutor(address, listen=listen)
    try:
        yield executor
    finally:
        executor.close()

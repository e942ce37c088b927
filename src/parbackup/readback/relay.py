"""A restore target on the controller, written by readers on other hosts (``--cluster``).

A reader that runs on a cluster host (next to its device) cannot write the restore
target itself unless every host shares it. With ``restore --cluster`` its directory sink
is replaced by a ``RelaySink``: it sends each checked payload over an authenticated TCP
connection (the run's key, the ``multiprocessing.connection`` HMAC challenge both ways)
back to the program that runs the restore, where ``serve`` writes it through an ordinary
``DirectorySink``, into the target on that machine. Only the restored bytes travel:
the device is read where it is attached, and nothing has to be mounted twice.

Payloads stream without waiting (TCP paces them); a file's completion waits for its
answer, which carries any write error of the file (a full target), so a file counts as
restored only once the controller wrote all of it and renamed it into place.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from parbackup.model import RecordRef
from parbackup.readback.sinks import DirectorySink, DirectorySinkSpec, Sink, SinkSpec, build_sink

CONNECT_SECONDS = 10.0
CALLBACK_ENV = "PARBACKUP_CLUSTER_CALLBACK_{port}"
"""Where a cluster task reached the controller listening on ``port`` (set by the task,
parbackup/cluster.py): the first address a relay tries."""


@dataclass(frozen=True, slots=True)
class RelaySinkSpec:
    """Send payloads to the restoring program at one of ``hosts`` : ``port``."""

    hosts: tuple[str, ...]
    port: int
    key: bytes
    token: str
    path: str = "the restoring program"


class RelaySink:
    """A reader's sink that writes through the restoring program (module docstring)."""

    deferred = False

    def __init__(self, spec: RelaySinkSpec) -> None:
        self.link = _connect(spec)
        self.lost = ""
        self.unowned: list[int] = []
        """Files the restoring program finished without their owner (``take_unowned``)."""

    def _send(self, *request: Any, data: memoryview | None = None) -> bool:
        if self.lost:
            return False
        try:
            self.link.send(request)
            if data is not None:
                self.link.send_bytes(data)
        except OSError as exc:
            self.lost = f"lost the restoring program: {exc}"
            return False
        return True

    def _answer(self) -> str:
        try:
            return self.link.recv()
        except (EOFError, OSError) as exc:
            self.lost = self.lost or f"lost the restoring program: {exc}"
            return self.lost

    def put(self, fid: int, ref: RecordRef, payload: memoryview) -> str:
        return "" if self._send("put", fid, ref.offset, data=payload) else self.lost

    def complete(self, fid: int) -> str:
        if not self._send("complete", fid):
            return self.lost
        answer = self._answer()
        if isinstance(answer, str):  # the link is lost
            return answer
        error, unowned = answer
        self.unowned.extend(unowned)
        return error

    def take_unowned(self) -> list[int]:
        taken, self.unowned = self.unowned, []
        return taken

    def fail(self, fid: int) -> None:
        self._send("fail", fid)

    def finish(self) -> str:
        error = self._answer() if self._send("finish") else self.lost
        with contextlib.suppress(OSError):
            self.link.close()
        return error


def build(spec: SinkSpec | RelaySinkSpec, emit) -> Sink:
    """``sinks.build_sink``, and the relay sink for a ``RelaySinkSpec``."""
    if isinstance(spec, RelaySinkSpec):
        return RelaySink(spec)
    return build_sink(spec, emit)


def _connect(spec: RelaySinkSpec) -> Connection:
    """An authenticated connection to the restoring program; OSError when none answers."""
    first = os.environ.get(CALLBACK_ENV.format(port=spec.port), "")
    errors = []
    for host in dict.fromkeys(h for h in (first, *spec.hosts) if h):
        try:
            sock = socket.create_connection((host, spec.port), timeout=CONNECT_SECONDS)
            sock.settimeout(None)
            link = Connection(sock.detach())
            answer_challenge(link, spec.key)
            deliver_challenge(link, spec.key)
            link.send_bytes(f"sink:{spec.token} -".encode())
            return link
        except Exception as exc:  # refused, unreachable, a wrong key
            errors.append(f"{host}: {exc}")
    raise OSError(f"cannot reach the restoring program ({'; '.join(errors)})")


def serve(link: Connection, spec: DirectorySinkSpec) -> None:
    """The controller's end of one relay: write what it sends through a DirectorySink."""
    sink = DirectorySink(spec)
    failed: dict[int, str] = {}
    try:
        while True:
            request = link.recv()
            op = request[0]
            if op == "put":
                fid, offset = request[1], request[2]
                data = link.recv_bytes()
                if fid not in failed:
                    ref = RecordRef("", "", 0, 0, offset, len(data), b"")
                    error = sink.put(fid, ref, memoryview(data))
                    if error:
                        failed[fid] = error
            elif op == "complete":
                error = failed.pop(request[1], "")
                if error:
                    sink.fail(request[1])
                error = error or sink.complete(request[1])
                link.send((error, sink.take_unowned()))  # owners it could not give
            elif op == "fail":
                failed.pop(request[1], None)
                sink.fail(request[1])
            elif op == "finish":
                link.send(sink.finish())
    except (EOFError, OSError):
        pass
    finally:
        sink.finish()
        with contextlib.suppress(OSError):
            link.close()

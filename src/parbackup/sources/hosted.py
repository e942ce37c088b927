"""A tree on one cluster host, read from the others (``PATH?host=NAME``, docs/CLUSTER.md).

A source that names its host lies on that host only. For the run, a small file server
runs there (``serve``: a worker started on that host like a mover, tied to the run's
life); it listens on a free port and answers only clients holding its random key (the
``multiprocessing.connection`` HMAC challenge, both ways). A mover on that same host
reads the tree directly (``LocalTree``); a mover on another host reads it through the
server (``HostedTree``): the bytes go from the source's host straight to the host of the
device, never through the controller. The server opens only paths inside its root, with
the same checks as a local read (``O_NOFOLLOW``, same inode and device as the scan saw).

Requests are small tuples; a read answers with the bytes read (one round trip per chunk
of ``CHUNK``): ``("open", path, expect)`` -> handle, ``("read", handle, offset, n)``,
``("identity", handle)``, ``("close", handle)`` (no answer). Errors come back as
``("error", kind, why)`` and are raised as the same ``SourceError`` kind here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from parbackup.entries import Entries
from parbackup.errors import SourceError
from parbackup.sources.base import (
    ErrorFunc,
    FileReader,
    Identity,
    Source,
    SourceChanged,
    SourceSpec,
)
from parbackup.sources.local import LocalTree

HOST_ENV = "PARBACKUP_CLUSTER_HOST"
"""The names of the cluster host a worker runs on (its Dask name and address), set by
the cluster task that starts it (parbackup/cluster.py)."""
HANDSHAKE_SECONDS = 10.0


def on_host(host: str) -> bool:
    """True when this process runs on the cluster host ``host``."""
    return bool(host) and host in os.environ.get(HOST_ENV, "").split()


@dataclass(frozen=True, slots=True)
class ServeSpec:
    """What a file server needs: the tree's root and the key of its clients."""

    root: str
    key: bytes


def split_via(via: str) -> tuple[str, int, bytes]:
    """``IP:PORT/KEYHEX`` -> (IP, PORT, KEY)."""
    address, _, key = via.partition("/")
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port), bytes.fromhex(key)


# -- the client, in a mover on another host ---------------------------------------------
class _HostedReader(FileReader):
    def __init__(self, tree: HostedTree, handle: int) -> None:
        self.tree, self.handle = tree, handle

    def readinto(self, offset: int, view: memoryview) -> int:
        data = self.tree.ask(("read", self.handle, offset, len(view)))
        view[: len(data)] = data
        return len(data)

    def identity(self) -> Identity:
        return Identity(*self.tree.ask(("identity", self.handle)))

    def xattrs(self) -> tuple[bytes, str]:
        """Read on the host from the open file (the scan leaves a regular file's to it)."""
        if not self.tree.spec.xattrs:  # backup --no-xattrs
            return b"", ""
        payload, why = self.tree.ask(("xattrs", self.handle))
        return payload, why

    def close(self) -> None:
        if self.handle >= 0:
            with contextlib.suppress(SourceError):
                self.tree.tell(("close", self.handle))
            self.handle = -1


class HostedTree(Source):
    """A local tree of another cluster host, read through its file server (``spec.via``).
    Scanning happens on the host itself (parbackup/cluster.py), never through here."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.link: Connection | None = None
        self.lost = ""
        """Why the server cannot be reached: every later file fails at once with it."""

    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        raise SourceError(f"{self.spec.display}: a tree on host {self.spec.host} is scanned there")

    def open(self, path: str | bytes, expect: Identity | None = None) -> FileReader:
        want = tuple(expect) if expect is not None else None
        return _HostedReader(self, self.ask(("open", os.fsencode(path), want)))

    def connect(self) -> Connection:
        if self.lost:
            raise SourceError(self.lost)
        if self.link is None:
            host, port, key = split_via(self.spec.via)
            where = f"{self.spec.display} on host {self.spec.host} ({host}:{port})"
            try:
                sock = socket.create_connection((host, port), timeout=HANDSHAKE_SECONDS)
                sock.settimeout(None)
                link = Connection(sock.detach())
                answer_challenge(link, key)
                deliver_challenge(link, key)
            except Exception as exc:  # refused, unreachable, a wrong key
                self.lost = f"cannot reach the file server of {where}: {exc}"
                raise SourceError(self.lost) from exc
            self.link = link
        return self.link

    def tell(self, request: tuple) -> None:
        try:
            self.connect().send(request)
        except OSError as exc:  # the next file connects again (once the server is
            self.drop()  # gone for good, that fails and every later file at once)
            raise SourceError(f"lost the file server of host {self.spec.host}: {exc}") from exc

    def ask(self, request: tuple) -> Any:
        self.tell(request)
        try:
            answer = self.connect().recv()
        except (EOFError, OSError) as exc:
            self.drop()
            why = exc or "connection closed"
            raise SourceError(f"lost the file server of host {self.spec.host}: {why}") from exc
        if isinstance(answer, tuple) and answer and answer[0] == "error":
            _kind, kind, why = answer
            raise (SourceChanged if kind == "changed" else SourceError)(why)
        return answer

    def drop(self) -> None:
        if self.link is not None:
            with contextlib.suppress(OSError):
                self.link.close()
            self.link = None

    def close(self) -> None:
        self.drop()


# -- the file server, on the source's host -----------------------------------------------
def serve(spec: ServeSpec, channel: Any) -> None:
    """Serve ``spec.root`` until the controller ends the run (``channel`` closes). The
    first message says the port it listens on: ``("listening", port)``."""
    server = socket.create_server(("", 0), backlog=64)
    channel.send(("listening", server.getsockname()[1]))
    threading.Thread(target=_accept, args=(server, spec), daemon=True).start()
    with contextlib.suppress(EOFError, OSError):
        while True:
            channel.recv()
    with contextlib.suppress(OSError):  # no new client (wakes the accepting thread);
        server.shutdown(socket.SHUT_RDWR)  # the process ends now, and its sessions
    server.close()


def _accept(server: socket.socket, spec: ServeSpec) -> None:
    while True:
        try:
            sock, _peer = server.accept()
        except OSError:
            return
        threading.Thread(target=_session, args=(sock, spec), daemon=True).start()


def _session(sock: socket.socket, spec: ServeSpec) -> None:
    """One client: authenticate it, then answer its requests until it leaves."""
    link = Connection(sock.detach())
    timer = threading.Timer(HANDSHAKE_SECONDS, link.close)
    timer.start()
    try:
        deliver_challenge(link, spec.key)
        answer_challenge(link, spec.key)
    except Exception:  # a stranger or a wrong key: drop it
        with contextlib.suppress(OSError):
            link.close()
        return
    finally:
        timer.cancel()
    root = os.fsencode(spec.root.rstrip("/") or "/")
    tree = LocalTree(SourceSpec("tree", spec.root, spec.root))
    files: dict[int, FileReader] = {}
    handles = itertools.count()
    try:
        while True:
            request = link.recv()
            try:
                answer = _answer(request, tree, root, files, handles)
            except SourceChanged as exc:
                answer = ("error", "changed", str(exc))
            except SourceError as exc:
                answer = ("error", "error", str(exc))
            if answer is not None:
                link.send(answer)
    except (EOFError, OSError):
        pass
    finally:
        for reader in files.values():
            reader.close()
        with contextlib.suppress(OSError):
            link.close()


def _answer(request: tuple, tree: LocalTree, root: bytes, files: dict, handles) -> Any:
    op = request[0]
    if op == "open":
        path, expect = request[1], request[2]
        inside = path == root or path.startswith(root.rstrip(b"/") + b"/")
        if not inside or os.path.normpath(path) != path:
            raise SourceError(f"not inside the served tree: {os.fsdecode(path)}")
        handle = next(handles)
        files[handle] = tree.open(path, Identity(*expect) if expect is not None else None)
        return handle
    if op == "read":
        _op, handle, offset, n = request
        buffer = bytearray(n)
        got = files[handle].readinto(offset, memoryview(buffer))
        del buffer[got:]
        return bytes(buffer)
    if op == "identity":
        return tuple(files[request[1]].identity())
    if op == "xattrs":
        return tuple(files[request[1]].xattrs())
    if op == "close":
        reader = files.pop(request[1], None)
        if reader is not None:
            reader.close()
        return None
    raise SourceError(f"unknown request {op!r}")


def served(spec: SourceSpec, via: str) -> SourceSpec:
    """``spec`` read through the file server at ``via`` from every other host."""
    return replace(spec, via=via)

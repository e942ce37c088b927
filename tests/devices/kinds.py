"""Every device kind, described the same way so one conformance suite can run them all.

A ``Kind`` makes fresh device URLs (``url``), says where to read a device back after it
was closed (``readback``: the captured image for a tape written into a FIFO), and names a
URL that cannot be reached. ``rewrite`` is False for media that cannot replace or delete
an object (tape).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from servers import FifoCapture, S3Server, SshServer, free_port

_counter = itertools.count()


@dataclass
class Kind:
    """How to make, read back and miss one kind of device in tests."""

    name: str
    make: Callable[[str], str]
    unreachable: str | None
    rewrite: bool = True
    captures: dict[str, FifoCapture] = field(default_factory=dict)

    def url(self, query: str = "") -> str:
        """A fresh, empty device; ``query`` like ``capacity=1M``."""
        return self.make(query)

    def readback(self, url: str) -> str:
        """Where to read the device written at ``url`` once it is closed."""
        base = url.split("?", 1)[0]
        if base in self.captures:
            return "tape://" + str(self.captures.pop(base).wait())
        return url


def _q(url: str, query: str) -> str:
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def memory_kind() -> Kind:
    return Kind("memory", lambda q: _q(f"memory://conf-{next(_counter)}", q), None)


def file_kind(tmp: Path) -> Kind:
    def make(q: str) -> str:
        d = tmp / f"dir{next(_counter)}"
        d.mkdir()
        return _q(f"file://{d}", q)

    return Kind("file", make, f"file://{tmp}/no/such/dir")


def tape_file_kind(tmp: Path) -> Kind:
    return Kind(
        "tape-file",
        lambda q: _q(f"tape://{tmp}/tape{next(_counter)}.img", q),
        f"tape://{tmp}/no/such/dir/tape.img",
        rewrite=False,
    )


def tape_fifo_kind(tmp: Path) -> Kind:
    kind = Kind("tape-fifo", lambda q: "", f"tape://{tmp}/nowhere/pipe", rewrite=False)

    def make(q: str) -> str:
        cap = FifoCapture(tmp, f"t{next(_counter)}")
        kind.captures[cap.url] = cap
        return _q(cap.url, q)

    kind.make = make
    return kind


def sftp_kind(server: SshServer, tmp: Path) -> Kind:
    def make(q: str) -> str:
        d = tmp / f"sftp{next(_counter)}"
        d.mkdir()
        return _q(server.url(d), q)

    dead = server.url("/x").replace(f":{server.port}/", f":{free_port()}/")
    return Kind("sftp", make, dead + "&retries=1&timeout=5")


def s3_kind(server: S3Server) -> Kind:
    bucket = server.bucket("conformance")

    def make(q: str) -> str:
        return _q(server.url(bucket, f"dev{next(_counter)}"), q)

    dead = f"s3://{bucket}/x?endpoint=http://127.0.0.1:{free_port()}&retries=1"
    return Kind("s3", make, dead)

"""A network namespace joined to this host by a veth pair: a "remote" host on this
machine. ``netns()`` yields a ``NetNs`` (its name, the host's address inside it, and
``cut()`` to take the link down) and removes both ends afterwards, even when the test
failed. Skips when not root or ``ip`` is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass
class NetNs:
    """A namespace, the address of its end of the link, and this host's end of it."""

    name: str
    address: str
    outer: str

    def cut(self) -> None:
        """The link goes dead: packets are dropped silently, connections stay open."""
        _ip("link", "set", self.outer, "down")


@contextlib.contextmanager
def netns(tag: str = "") -> Iterator[NetNs]:
    """A namespace ``pb<pid><tag>`` reachable at 10.231.<n>.2 from here (10.231.<n>.1)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip netns)")
    n = (os.getpid() + sum(map(ord, tag))) % 250 + 1
    name, outer, inner = f"pb{os.getpid()}{tag}", f"pbo{n}{tag}"[:15], f"pbi{n}{tag}"[:15]
    here, there = f"10.231.{n}.1", f"10.231.{n}.2"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{here}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{there}/30", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield NetNs(name, there, outer)
    finally:
        _ip("link", "del", outer, check=False)
        _ip("netns", "del", name, check=False)

"""Telling that two device URLs lead to one medium, before anything is written to it.

Labels catch most of it: two URLs of one labelled directory read the same ``label.json``
(engine/devices.py, engine/fleet.py). They miss what has no label yet or gets a new one:
a tape starts a new medium, so two spellings of one tape image (``tape:///t.img`` and a
symlink to it) each wrote a label and volumes over the other, the set said `complete`,
and a file came back damaged; a fresh directory named as a data device and again as a
parity device got two labels, and the set "survived losing any 1 device" while it held
no redundancy. So a backup compares the media themselves first: a local directory or
tape by the file it resolves to (device and inode; a drive by its device number; one
not made yet by its resolved parent and name), an SFTP directory by host, port and
normalised path, an S3 prefix by endpoint, bucket and prefix. A kind this cannot tell
is not compared. A medium on another host (``?host=``) is compared by that host and its
normalised path, without looking at it from here.

The other way round, two media may carry one label (a cloned disk): ``copy_of`` tells a
backup that the directory it is about to write is not the one the catalog knows for
that label, while that one still carries it.

A SQLite catalog must not lie in a directory device's own ``catalog/`` or ``sets/``: the
first is where every backup puts that device's catalog copy, and a device that holds
either is no longer a fresh one (its first backup refused to label it, with a message
about volumes it did not hold).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from parbackup.devices.base import DATA_PREFIXES
from parbackup.devices.registry import FAULTY
from parbackup.devices.url import DeviceURL, parse_url, redact
from parbackup.errors import UsageError
from parbackup.fileio import open_regular

Key = tuple[Hashable, ...]
T = TypeVar("T")


def _local_key(path: str) -> Key:
    """The file ``path`` resolves to (symlinks followed); for one not made yet, its
    resolved parent and name (two spellings of it are still one)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        parent, name = os.path.split(real)
        try:
            up = os.stat(parent)
        except OSError:
            return ("path", real)
        return ("new", up.st_dev, up.st_ino, name)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return ("rdev", st.st_rdev)
    return ("inode", st.st_dev, st.st_ino)


def medium_key(url: DeviceURL) -> Key | None:
    """What identifies the medium ``url`` leads to, or None where it cannot be told.
    Local kinds are looked at (``stat``): call it where a hung mount cannot hold the run
    up (``check_distinct`` does)."""
    scheme = url.scheme.removeprefix(FAULTY)
    host = url.params.get("host", "")
    if scheme in ("file", "tape"):
        if host:
            return ("host", host, posixpath.normpath(url.path))
        return _local_key(url.path)
    if scheme == "sftp":
        path = posixpath.normpath(url.path or "/")
        user = url.user if "~" in path else ""  # a login directory is the user's own
        return ("sftp", url.host.lower(), url.port or 22, user, path)
    if scheme == "s3":
        return ("s3", url.params.get("endpoint", ""), url.host, url.path.strip("/"))
    return None


def _data_dir_holding(url: DeviceURL, catalog: str) -> str:
    """The data directory (``catalog/``, ``sets/``) of the local directory device ``url``
    that the file ``catalog`` lies in, at any depth, made yet or not ('' if none). The
    directory above it is compared with the device's as media are (``_local_key``: by
    device and inode, so a bind mount or symlink of the device is seen through)."""
    if not catalog or url.scheme.removeprefix(FAULTY) != "file" or url.params.get("host"):
        return ""
    device = _local_key(url.path)
    at = os.path.realpath(catalog)
    while True:
        up, name = os.path.split(at)
        if f"{name}/" in DATA_PREFIXES and _local_key(up) == device:
            return f"{name}/"
        if up == at:
            return ""
        at = up


def _looked(
    parsed: Sequence[DeviceURL], look: Callable[[DeviceURL], T], timeout: float
) -> list[T | None]:
    """``look`` at each URL in a daemon thread, ``timeout`` seconds in all: one that does
    not answer (a hung mount) or fails gives None, and is failed by its own opening as
    usual."""
    out: list[T | None] = [None] * len(parsed)

    def run(i: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            out[i] = look(parsed[i])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(parsed))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return list(out)


def check_distinct(urls: Sequence[str], timeout: float) -> None:
    """UsageError when two of ``urls`` lead to one medium (looked at as ``_looked`` says)."""
    parsed = [parse_url(u) for u in urls]
    seen: dict[Key, str] = {}
    for url, key in zip(parsed, _looked(parsed, medium_key, timeout), strict=True):
        if key is None:
            continue
        if key in seen:
            raise UsageError(
                f"the same device is named twice: {seen[key]} and {redact(url.raw)}"
                " lead to one medium"
            )
        seen[key] = redact(url.raw)


def check_catalog_place(urls: Sequence[str], catalog: str, timeout: float) -> None:
    """UsageError when the SQLite catalog file ``catalog`` ('' for none, or a catalog
    server) lies in a directory device's ``catalog/`` or ``sets/``. Call it before the
    catalog is opened: opening makes the file (and so the directory)."""
    if not catalog:
        return
    parsed = [parse_url(u) for u in urls]

    def inside(url: DeviceURL) -> str:
        return _data_dir_holding(url, catalog)

    for url, prefix in zip(parsed, _looked(parsed, inside, timeout), strict=True):
        if prefix:
            raise UsageError(
                f"the catalog {catalog} lies in {prefix} of the device {redact(url.raw)},"
                " where parbackup keeps that device's own data (each backup puts its copy"
                " of the catalog in catalog/): keep the catalog elsewhere"
            )


def _carries(url: str, label: str, other: str) -> bool:
    """Whether the local directory device ``url`` still carries ``label`` and is another
    medium than the directory device ``other``."""
    first, second = parse_url(url), parse_url(other)
    for u in (first, second):
        if u.scheme.removeprefix(FAULTY) != "file" or u.params.get("host"):
            return False
    try:
        with os.fdopen(open_regular(os.path.join(first.path, "label.json")), "rb") as fh:
            held = json.loads(fh.read(1 << 16)).get("label")
    except (OSError, ValueError, AttributeError):
        return False
    return held == label and _local_key(first.path) != _local_key(second.path)


def copy_of(known: str, url: str, label: str, timeout: float) -> bool:
    """Whether the directory device at ``url``, carrying ``label``, is one of two media
    with that label: the catalog knows the label at ``known``, another directory that
    still carries it (a cloned disk, ``cp -a``). A device that moved leaves no label
    behind, and two devices that swapped places carry each other's. Looked at in a
    daemon thread for ``timeout`` seconds at most (no answer: not a copy)."""
    answer: list[bool] = []

    def look() -> None:
        with contextlib.suppress(Exception):
            answer.append(_carries(known, label, url))

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])

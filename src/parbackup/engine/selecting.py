"""What a backup leaves out of its local trees: the user's selection plus the automatic
excludes (a backup device or the catalog that lies inside a source, which would
otherwise back itself up and grow on every run). The scan applies it (sources/select.py).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from parbackup.catalog.runlock import LOCK_SUFFIXES
from parbackup.devices.registry import FAULTY
from parbackup.devices.url import DeviceURL, parse_url
from parbackup.errors import UsageError
from parbackup.progress import EventSink, Notice, ignore
from parbackup.selection import ScanRules
from parbackup.sources.base import SourceSpec


def _inside(path: str, tree: str) -> bool:
    return path != tree and path.startswith(tree.rstrip("/") + "/")


def automatic_excludes(
    specs: Sequence[SourceSpec], device_urls: Sequence[str], catalog_path: str = ""
) -> tuple[tuple[str, str], ...]:
    """(path, why) of every local device and catalog file that lies inside a tree
    source, named as the scan records it (also when reached through a symlink)."""
    found: list[tuple[str, str]] = []
    homes: list[tuple[str, str]] = []  # directory devices: (path, why)
    for url in device_urls:
        try:
            parsed = parse_url(url.removeprefix(FAULTY))
        except UsageError:
            continue
        if parsed.scheme in ("file", "tape") and parsed.path:
            found.append((parsed.path, f"automatic: backup device {parsed.display}"))
            if parsed.scheme == "file":
                homes.append(found[-1])
    if catalog_path and "://" not in catalog_path:  # a catalog on a server is no file
        for suffix in ("", "-wal", "-shm", "-journal", *LOCK_SUFFIXES):
            found.append((catalog_path + suffix, "automatic: the catalog"))
    out: dict[str, str] = {}
    filesystems = _filesystems_above(os.path.realpath(path) for path, _why in found)
    for spec in specs:
        if spec.kind != "tree":
            continue
        root, real_root = spec.record_root, os.path.realpath(spec.record_root)
        mounts = _mounts_inside(real_root, filesystems)
        for path, why in found:
            names = [os.path.abspath(path), os.path.realpath(path)]
            names += _through_mounts(names[1], mounts)
            for name in names:
                for base in (root, real_root):
                    if _inside(name, base):
                        out.setdefault(root.rstrip("/") + name[len(base.rstrip("/")) :], why)
        for path, why in homes:  # a source that is a device directory, or lies in one
            for name in {os.path.abspath(path), os.path.realpath(path)}:
                for base in (root, real_root):
                    for own in _own(name, base):
                        out.setdefault(root.rstrip("/") + own[len(base.rstrip("/")) :], why)
    return tuple(out.items())


OWN_NAMES = ("label.json", "sets", "catalog", "keys")
"""What a directory device holds of its own (devices/base.py: the label, the volumes,
the catalog copy, the key copies); the rest of the directory is the user's."""


def _own(device: str, tree: str) -> list[str]:
    """The paths of the directory device ``device`` to leave out of the tree ``tree``
    when the tree is the device's directory (its own names) or lies inside what it holds
    (then the whole tree). Before, ``backup /mnt/d1 -d /mnt/d1 -d /mnt/d2`` stored the
    volumes of the runs before: 50, 146, 220 kB for 50 kB of files (session-13 hostile
    tester)."""
    device = device.rstrip("/") or "/"
    tree = tree.rstrip("/") or "/"
    if tree == device:
        return [os.path.join(device, n) for n in OWN_NAMES]
    for n in OWN_NAMES:
        held = os.path.join(device, n)
        if tree == held or _inside(tree, held):
            return [tree]
    return []


def _filesystems_above(paths: Iterable[str]) -> set[int]:
    """The device numbers of the filesystems ``paths`` and the directories above them
    lie on: a mount below a source can show one of them only if it is of one of these."""
    out: set[int] = set()
    seen: set[str] = set()  # the catalog's files and the devices share their ancestors
    for path in paths:
        while path not in seen:
            seen.add(path)
            with contextlib.suppress(OSError):
                out.add(os.stat(path).st_dev)
            if path in ("/", ""):
                break
            path = os.path.dirname(path)
    return out


def _mounts_inside(tree: str, filesystems: set[int]) -> list[tuple[str, tuple[int, int]]]:
    """(path, (device, inode)) of every mount point below ``tree`` that is of one of
    ``filesystems`` (/proc/self/mountinfo; none where it cannot be read). Only those are
    looked at (``stat``): a hung network mount below the source, excluded from the scan,
    must not hold the backup up here. btrfs is looked at whatever its number says (a
    subvolume's files carry a number of their own, not the mount's)."""
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5 or b":" not in fields[2]:
            continue
        major, minor = fields[2].split(b":", 1)
        fstype = fields[fields.index(b"-", 6) + 1] if b"-" in fields[6:-1] else b""
        if os.makedev(int(major), int(minor)) not in filesystems and fstype != b"btrfs":
            continue
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
        path = os.fsdecode(point)
        if _inside(path, tree):
            try:
                st = os.stat(path)
            except OSError:
                continue
            out.append((path, (st.st_dev, st.st_ino)))
    return out


def _through_mounts(real: str, mounts: list[tuple[str, tuple[int, int]]]) -> list[str]:
    """The other paths ``real`` is seen at through the mounts ``mounts`` (a bind mount of
    it or of a directory above it): a device bind-mounted into a source is inside it
    although no path of it is (found by the session-13 hostile tester: every run backed
    up the volumes of the runs before)."""
    if not mounts:
        return []
    out = []
    above = real
    while True:
        try:
            st = os.stat(above)
        except OSError:
            st = None
        if st is not None:
            for point, ident in mounts:
                if ident == (st.st_dev, st.st_ino):
                    out.append(
                        point + real[len(above.rstrip("/")) :] if above != "/" else point + real
                    )
        if above == "/":
            return out
        above = os.path.dirname(above)


def selecting(
    specs: Sequence[SourceSpec], select: ScanRules, xattrs: bool = True
) -> list[SourceSpec]:
    """The specs with local trees carrying ``select`` (other kinds are scanned whole),
    and reading no extended attributes unless ``xattrs``."""
    out = [replace(s, select=select) if s.kind == "tree" and select else s for s in specs]
    return out if xattrs else [replace(s, xattrs=False) for s in out]


def with_automatic(
    select: ScanRules, automatic: tuple[tuple[str, str], ...], on_event: EventSink = ignore
) -> ScanRules:
    """``select`` plus the automatic excludes that exist, each said by a Notice."""
    present = tuple((p, why) for p, why in automatic if os.path.lexists(p))
    for path, why in present:
        on_event(Notice(f"left out {path}: {why.removeprefix('automatic: ')} inside a source"))
    return replace(select, automatic=present) if present else select


def _remote_place(url: DeviceURL) -> tuple[str, str] | None:
    """(store, recorded path) of an S3 or SFTP URL: which store it names (a bucket at
    one endpoint; a host and port) and the path a remote source records it under
    (``/<bucket>/<prefix>``, ``/<host>/<path>``). None for other kinds, and for an SFTP
    path relative to the login directory (whose absolute path only the server knows)."""
    if url.scheme == "s3" and url.host:
        prefix = url.path.strip("/")
        store = f"s3 {url.host} {url.params.get('endpoint', '')}"
        return store, f"/{url.host}" + (f"/{prefix}" if prefix else "")
    if url.scheme == "sftp" and url.host:
        path = url.path or "/"
        if path == "/~" or path.startswith("/~/"):
            return None
        return f"sftp {url.host} {url.port or 22}", f"/{url.host}" + posixpath.normpath(path)
    return None


def inside_remote(
    specs: Sequence[SourceSpec], device_urls: Sequence[str], on_event: EventSink = ignore
) -> list[SourceSpec]:
    """The specs, each S3 or SFTP source given (as automatic excludes) the devices of the
    same store that lie inside it, each said by a Notice (M3: a device inside a source is
    never backed up). Before, ``backup s3://b -d s3://b/backup`` backed up its own
    volumes and catalog copies, every run more of them."""
    places = []
    for url in device_urls:
        try:
            parsed = parse_url(url.removeprefix(FAULTY))
        except UsageError:
            continue
        place = _remote_place(parsed)
        if place is not None:
            places.append((*place, parsed.display))
    out = []
    for spec in specs:
        try:
            root = _remote_place(parse_url(spec.name)) if spec.kind in ("s3", "sftp") else None
        except UsageError:
            root = None
        found = []
        if root is not None:
            store, top = root
            for where, path, display in places:
                if where == store and (path == top or _inside(path, top)):
                    found.append((path, f"automatic: backup device {display}"))
                    on_event(Notice(f"left out {path}: backup device {display} inside a source"))
        if found:
            spec = replace(
                spec, select=replace(spec.select, automatic=(*spec.select.automatic, *found))
            )
        out.append(spec)
    return out

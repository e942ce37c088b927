"""Remote trees as sources (REQUIREMENTS F1, F2): ``sftp://[user@]host[:port]/path`` and
``s3://bucket/prefix``.

A remote source is read through the same URL handling and connection code as the remote
devices (``devices.url``, ``devices.registry``): the same ``~/.ssh/config``, agent,
``?identity=`` and ``?known_hosts=`` options and host key checks. Its entries are
recorded under ``/<host>/<absolute remote path>`` (``/<bucket>/<key>`` for S3), so a
remote tree restores to ``TARGET/<host>/...`` and never collides with a local one; the
catalog keeps the URL without secrets as the source. An S3 prefix is a tree whose
directories are the ``/``-separated parts of its keys (mode 0755; files 0644, mtime =
LastModified). Each thread (the scan, each device writer) keeps its own connection per
host, so devices read remote files at once; ``close_connections`` ends them.

SFTP and S3 give no ctime and no inode number, and mtime in whole seconds: an
incremental backup of a remote tree compares size and mtime (``ctime_ns`` is the mtime).
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
import threading
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

from parbackup.devices.base import Device
from parbackup.devices.registry import open_device
from parbackup.devices.url import DeviceURL, parse_url
from parbackup.errors import DeviceError, SourceError
from parbackup.model import FileEntry, Kind

REMOTE_SCHEMES = ("sftp", "s3")
CHANGED = "file changed while being read"
SHRANK = "file shrank while being read"

ErrorFunc = Callable[[str, str], None]

_local = threading.local()
_opened: list[Device] = []
_lock = threading.Lock()


def is_remote(source: str) -> bool:
    """True when ``source`` is a URL naming a remote tree (not a local path)."""
    return "://" in source and source.split("://", 1)[0].lower() != "file"


def check_remote(source: str) -> str:
    """``source`` if it is a remote tree parbackup can read; SourceError if not."""
    url = parse_url(source)
    if url.scheme not in REMOTE_SCHEMES:
        known = ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        raise SourceError(f"cannot read sources of kind {url.scheme}:// (known: {known})")
    return source


def _device(url: DeviceURL) -> Device:
    """This thread's open device for the host (bucket) of ``url``, made on first use."""
    key = (url.scheme, url.user, url.host, url.port, tuple(sorted(url.params.items())))
    cache: dict = _local.__dict__.setdefault("sessions", {})
    device = cache.get(key)
    if device is None:
        root = urlunsplit(urlsplit(url.raw)._replace(path="/"))
        device = open_device(root)
        device.open()
        cache[key] = device
        with _lock:
            _opened.append(device)
    return device


def _session(url: DeviceURL):
    """This thread's SFTP session to the host of ``url`` (connecting on first use)."""
    return _device(url)._client()


def close_connections() -> None:
    """Close every connection opened to read remote sources."""
    with _lock:
        devices, _opened[:] = list(_opened), []
    for device in devices:
        with contextlib.suppress(Exception):
            device.close()


def _file_url(url: DeviceURL, path: str) -> str:
    return urlunsplit(urlsplit(url.raw)._replace(path=quote(path)))


def _entry(url: DeviceURL, path: str, attrs, source: str, link: str) -> FileEntry | None:
    mode = attrs.st_mode or 0
    if stat.S_ISREG(mode):
        kind, size = Kind.FILE, attrs.st_size or 0
    elif stat.S_ISDIR(mode):
        kind, size = Kind.DIR, 0
    elif stat.S_ISLNK(mode):
        kind, size = Kind.SYMLINK, 0
    else:
        return None
    mtime_ns = int(attrs.st_mtime or 0) * 1_000_000_000
    return FileEntry(
        path=f"/{url.host}{path}",
        kind=kind,
        size=size,
        mode=mode,
        mtime_ns=mtime_ns,
        uid=attrs.st_uid or 0,
        gid=attrs.st_gid or 0,
        link=link,
        source=source,
        ctime_ns=mtime_ns,
        read_from=_file_url(url, path),
    )


def walk_remote(source: str, on_error: ErrorFunc) -> Iterator[FileEntry]:
    """Entries of one remote tree (its root first), depth first, sorted by name."""
    url = parse_url(source)
    if url.scheme == "s3":
        yield from _walk_s3(url, on_error)
        return
    display = url.display
    try:
        sftp = _session(url)
        raw = url.path or "/"
        start = raw[3:] or "." if raw.startswith("/~") else raw
        top = sftp.normalize(start)
        root_attrs = sftp.lstat(top)
    except (DeviceError, OSError) as exc:
        on_error(display, str(exc))
        return

    def make(path: str, attrs) -> FileEntry | None:
        link = sftp.readlink(path) or "" if stat.S_ISLNK(attrs.st_mode or 0) else ""
        return _entry(url, path, attrs, display, link)

    root = make(top, root_attrs)
    if root is None:
        on_error(display, "not a regular file, directory or symlink")
        return
    yield root
    if root.kind is not Kind.DIR:
        return
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            children = sorted(sftp.listdir_attr(directory), key=lambda a: a.filename)
        except OSError as exc:
            on_error(f"/{url.host}{directory}", str(exc))
            continue
        subdirs = []
        for attrs in children:
            path = posixpath.join(directory, attrs.filename)
            try:
                entry = make(path, attrs)
            except OSError as exc:
                on_error(f"/{url.host}{path}", str(exc))
                continue
            if entry is None:
                on_error(f"/{url.host}{path}", "special file not backed up")
                continue
            yield entry
            if entry.kind is Kind.DIR:
                subdirs.append(path)
        stack.extend(reversed(subdirs))


def read_remote(
    entry: FileEntry, offset: int, size: int, buffer: bytearray
) -> Iterator[tuple[int, memoryview]]:
    """Bytes [offset, offset+size) of a remote file in pieces of ``len(buffer)``.

    Raises SourceError when the file cannot be read, is shorter than recorded, or changed
    (size or mtime) while it was read.
    """
    url = parse_url(entry.read_from)
    if url.scheme == "s3":
        yield from _read_s3(entry, url, offset, size, buffer)
        return
    try:
        fh = _session(url).open(url.path, "rb")
    except (DeviceError, OSError) as exc:
        raise SourceError(f"cannot open: {exc}") from exc
    view = memoryview(buffer)
    try:
        at, end = offset, offset + size
        while at < end:
            want = min(len(buffer), end - at)
            try:
                data = b"".join(fh.readv([(at, want)]))
            except (OSError, EOFError) as exc:
                raise SourceError(f"read failed: {exc}") from exc
            if len(data) != want:
                raise SourceError(SHRANK)
            view[:want] = data
            yield at, view[:want]
            at += want
        attrs = fh.stat()
        if (attrs.st_size, int(attrs.st_mtime or 0) * 1_000_000_000) != (
            entry.size,
            entry.mtime_ns,
        ):
            raise SourceError(CHANGED)
    finally:
        with contextlib.suppress(Exception):
            fh.close()


# -- S3 ------------------------------------------------------------------------------------
def _s3_objects(url: DeviceURL) -> list[dict]:
    """Every object under the URL's prefix (key, size, LastModified)."""
    device = _device(url)
    prefix = url.path.strip("/")
    base = f"{prefix}/" if prefix else ""
    s3 = device._client()  # type: ignore[attr-defined]

    def listing() -> list[dict]:
        out: list[dict] = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=url.host, Prefix=base)
        for page in pages:
            out.extend(page.get("Contents", []))
        return out

    return device._call("list", listing)  # type: ignore[attr-defined]


def _walk_s3(url: DeviceURL, on_error: ErrorFunc) -> Iterator[FileEntry]:
    try:
        objects = _s3_objects(url)
    except DeviceError as exc:
        on_error(url.display, str(exc))
        return
    prefix = url.path.strip("/")
    top = f"/{url.host}" + (f"/{prefix}" if prefix else "")
    newest = max((int(o["LastModified"].timestamp()) for o in objects), default=0) * 10**9
    entries: dict[str, FileEntry] = {}

    def add_dir(path: str) -> None:
        while path not in entries and path.startswith(top):
            entries[path] = FileEntry(
                path, Kind.DIR, 0, 0o040755, newest, source=url.display, ctime_ns=newest
            )
            path = posixpath.dirname(path)

    add_dir(top)
    for obj in objects:
        key = obj["Key"]
        path = f"/{url.host}/{key}"
        if key.endswith("/"):
            add_dir(path.rstrip("/"))
            continue
        if any(part in ("", ".", "..") for part in key.split("/")):
            on_error(path, "object key cannot be a file path")
            continue
        add_dir(posixpath.dirname(path))
        mtime = int(obj["LastModified"].timestamp()) * 10**9
        entries[path] = FileEntry(
            path,
            Kind.FILE,
            int(obj["Size"]),
            0o100644,
            mtime,
            source=url.display,
            ctime_ns=mtime,
            read_from=_file_url(url, "/" + key),
        )
    yield from (entries[p] for p in sorted(entries))


def _read_s3(
    entry: FileEntry, url: DeviceURL, offset: int, size: int, buffer: bytearray
) -> Iterator[tuple[int, memoryview]]:
    device = _device(url)
    key = url.path.lstrip("/")
    view = memoryview(buffer)
    at, end = offset, offset + size
    try:
        while at < end:
            want = min(len(buffer), end - at)
            data = device.read(key, at, want)
            if len(data) != want:
                raise SourceError(SHRANK)
            view[:want] = data
            yield at, view[:want]
            at += want
        s3 = device._client()  # type: ignore[attr-defined]
        head = device._call(  # type: ignore[attr-defined]
            "stat", lambda: s3.head_object(Bucket=url.host, Key=key)
        )
    except DeviceError as exc:
        raise SourceError(f"read failed: {exc}") from exc
    mtime = int(head["LastModified"].timestamp()) * 10**9
    if (int(head["ContentLength"]), mtime) != (entry.size, entry.mtime_ns):
        raise SourceError(CHANGED)

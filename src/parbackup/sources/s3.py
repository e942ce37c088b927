"""A bucket and key prefix of S3-compatible storage as a source (F1, F2): ``s3://bucket/prefix``.

The client is built by the same code as the S3 device (``devices.s3.client_for``: the
URL's ``?endpoint=``, ``?profile=``, ``?region=`` over the standard AWS configuration),
on first use; errors are mapped by the same call (``devices.s3.call``). One object
serves one thread; ``close()`` ends the client. Options the source does not use (a
device's ``?part=``, a typo) are a UsageError when it is made.

The prefix is a tree whose directories are the ``/``-separated parts of its keys (mode
0755, mtime of the newest object); objects are files (mode 0644, mtime = LastModified),
recorded under ``/<bucket>/<key>``. A key that cannot be a path (empty, ``.`` or ``..``
parts, or one below another object's name) is reported and skipped. S3 tells size,
whole-second mtime and the ETag: ``fields`` is size, mtime and "inode", which for an
object is a 63-bit digest of its ETag (``etag_number``; ``ctime_ns`` is the mtime). So an
object rewritten within the second it was backed up, at the same size, is not taken for
unchanged by an incremental backup, nor by the read that follows its scan.

Every range of one open object is fetched with ``If-Match`` on the ETag seen when it was
opened, so an object replaced while it is read raises SourceChanged instead of mixing
two versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions

from parbackup.devices.registry import check_options
from parbackup.devices.s3 import call, client_for
from parbackup.devices.url import parse_url
from parbackup.entries import DIR, FILE, Entries
from parbackup.errors import DeviceError, SourceError, UsageError
from parbackup.sources.base import ErrorFunc, Identity, Source, SourceChanged, SourceSpec
from parbackup.sources.sized import CHANGED, SizedReader, check_unchanged

_T = TypeVar("_T")
DIR_MODE, FILE_MODE = 0o040755, 0o100644


def _seconds_ns(obj: dict) -> int:
    return int(obj["LastModified"].timestamp()) * 1_000_000_000


def etag_number(etag: str) -> int:
    """The object's version as an inode number: 63 bits of BLAKE2b over its ETag (a
    signed 64-bit catalog column holds it), never 0 but for no ETag at all. The ETag is
    taken without quotes or a weak ``W/`` mark: S3-compatible servers differ in how they
    tell it, and one version must have one number in a listing and in a GET."""
    etag = etag.strip().removeprefix("W/").strip('"')
    if not etag:
        return 0
    digest = hashlib.blake2b(etag.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


class S3Prefix(Source):
    """``s3://bucket/prefix``; see the module docstring."""

    fields = ("size", "mtime", "inode")
    content_identity = True  # the "inode" is the ETag's digest
    options = frozenset({"endpoint", "profile", "region", "addressing", "retries", "timeout"})

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.url = parse_url(spec.name)
        self.where = spec.display or self.url.display
        check_options(self.url, self.options, "source")
        self.bucket = self.url.host
        self.prefix = self.url.path.strip("/")
        self.top = f"/{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.s3: Any = None

    def _call(self, what: str, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn`` with the client (made on first use); every error is a SourceError."""
        try:
            if self.s3 is None:
                try:
                    self.s3 = client_for(self.url)
                except ValueError as exc:  # ?retries= or ?timeout= is not a number
                    raise UsageError(f"{self.where}: bad option value ({exc})") from None
            s3 = self.s3
            return call(what, lambda: fn(s3))
        except DeviceError as exc:
            raise SourceError(str(exc)) from exc

    def _key(self, path: str) -> str:
        """The key of the object recorded as ``path`` (``/<bucket>/<key>``)."""
        if not path.startswith(self.top + "/"):
            raise SourceError(f"not in the source {self.where}")
        return path[len(self.bucket) + 2 :]

    def close(self) -> None:
        client, self.s3 = self.s3, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # -- the interface ---------------------------------------------------------------------
    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        """Stream the listing into ``out``: memory grows with directories, not objects."""
        if not self.bucket:
            raise SourceError(f"{self.where}: no bucket (use s3://bucket/prefix)")
        base = f"{self.prefix}/" if self.prefix else ""
        pages = iter(
            self._call(
                self.where,
                lambda s: s.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=base
                ),
            )
        )
        dirs: dict[str, int] = {}  # path -> row, to give them the newest mtime at the end
        above: list[str] = []  # files whose name is a prefix of the keys that follow

        def add_dirs(path: str) -> None:
            missing = []
            while path not in dirs and (path == self.top or path.startswith(self.top + "/")):
                missing.append(path)
                path = posixpath.dirname(path)
            for p in reversed(missing):
                dirs[p] = out.append(os.fsencode(p), DIR, 0, DIR_MODE, 0, 0, 0, source=index)

        add_dirs(self.top)
        skip = dict(self.spec.select.automatic)  # a backup device inside the prefix
        seen: set[str] = set()
        newest, first = 0, True
        while True:
            try:
                page = self._call(self.where, lambda _: next(pages, None))
            except SourceError as exc:
                if first:
                    raise  # no bucket, no access: the root cannot be read at all
                on_error(self.top, f"listing stopped: {exc}")
                break
            first = False
            if page is None:
                break
            for obj in page.get("Contents", []):
                key = obj["Key"]
                path = f"/{self.bucket}/{key}"
                if skip and self._left_out(path, skip, seen):
                    continue
                mtime = _seconds_ns(obj)
                newest = max(newest, mtime)
                while above and not path.startswith(above[-1]):
                    above.pop()  # keys come sorted: a name no longer a prefix never is again
                if any(path.startswith(f + "/") for f in above):
                    on_error(path, "object key lies below another object's name")
                elif any(p in ("", ".", "..") for p in key.removesuffix("/").split("/")):
                    on_error(path, "object key cannot be a file path")
                elif key.endswith("/"):
                    add_dirs(path.rstrip("/"))  # a "directory marker" object
                else:
                    add_dirs(posixpath.dirname(path))
                    size = int(obj["Size"])
                    out.append(
                        os.fsencode(path),
                        FILE,
                        size,
                        FILE_MODE,
                        0,
                        0,
                        mtime,
                        mtime,
                        ino=etag_number(obj.get("ETag", "")),
                        source=index,
                    )
                    above.append(path)
        for row in dirs.values():
            out.mtime_ns[row] = out.ctime_ns[row] = newest

    def _left_out(self, path: str, skip: dict[str, str], seen: set[str]) -> bool:
        """True when ``path`` lies in one of the ``skip`` paths (path -> why), each
        counted once in ``self.excluded`` (``seen``), as the device's directory."""
        for top, why in skip.items():
            if path == top or path.startswith(top + "/"):
                if top not in seen:
                    seen.add(top)
                    self.excluded.add(top, why)
                return True
        return False

    def _head(self, path: str) -> tuple[Identity, str]:
        key = self._key(path)
        return _version(self._call("stat", lambda s: s.head_object(Bucket=self.bucket, Key=key)))

    def changes(self, old: Identity, new: Identity) -> list[str]:
        """As any source's, but an ETag only one side told (a server that leaves it out
        of a listing or an answer: number 0) is no change: nothing to compare it with."""
        if not old.ino or not new.ino:
            new = new._replace(ino=old.ino)
        return super().changes(old, new)

    def open(self, path: str | bytes, expect: Identity | None = None) -> _S3Reader:
        """A reader; no request yet: the first range tells the version (see _S3Reader)."""
        path = os.fsdecode(path)
        return _S3Reader(self, path, expect)

    def identity(self, path: str) -> Identity | None:
        try:
            return self._head(path)[0]
        except SourceError:
            return None


def _version(answer: dict) -> tuple[Identity, str]:
    """The identity and ETag of the object a HEAD or GET answered about."""
    size = int(answer["ContentLength"])
    if answer.get("ContentRange"):  # "bytes FIRST-LAST/TOTAL": a range of a larger object
        size = int(answer["ContentRange"].rsplit("/", 1)[1])
    mtime, etag = _seconds_ns(answer), answer.get("ETag", "")
    return Identity(size, mtime, mtime, etag_number(etag)), etag


class _S3Reader(SizedReader):
    """Byte ranges of one object, all from one version of it.

    The first range is fetched unconditionally and its answer tells the version (size,
    LastModified, ETag): it is checked against what the scan saw before a byte is handed
    out, and every later range is fetched with ``If-Match`` on that ETag. So a small file
    costs one request, and ``identity()`` is the version read: a change while it was read
    has already raised SourceChanged.
    """

    def __init__(self, prefix: S3Prefix, path: str, expect: Identity | None) -> None:
        super().__init__(0)  # the size is known from the first answer
        self.prefix, self.path, self.expect = prefix, path, expect
        self.key = prefix._key(path)
        self.version: Identity | None = None
        self.etag = ""
        self.ahead: tuple[int, bytes] | None = None

    def _learn(self, version: Identity, etag: str) -> None:
        check_unchanged(self.prefix, self.expect, version)
        self.version, self.etag, self.size = version, etag, version.size

    def readinto(self, offset: int, view: memoryview) -> int:
        if self.version is None and len(view):
            answer, data = self._get(offset, len(view))
            # past the end (an empty object) the answer says nothing: ask what it is
            self._learn(*(_version(answer) if answer else self.prefix._head(self.path)))
            self.ahead = (offset, data)
        return super().readinto(offset, view)

    def fetch(self, offset: int, length: int) -> bytes:
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] == offset:
            return ahead[1]  # the first range, fetched to learn the version
        return self._get(offset, length)[1]

    def _get(self, offset: int, length: int) -> tuple[dict | None, bytes]:
        """One range: its answer's headers (None past the end) and bytes."""
        bucket, key = self.prefix.bucket, self.key
        condition = {"IfMatch": self.etag} if self.etag else {}

        def get(s3: Any) -> tuple[dict | None, bytes] | None:
            try:
                resp = s3.get_object(
                    Bucket=bucket,
                    Key=key,
                    Range=f"bytes={offset}-{offset + length - 1}",
                    **condition,
                )
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    return None  # another version of the object now
                if code == "InvalidRange":
                    return None, b""  # starts at or past the end
                raise
            with contextlib.closing(resp.pop("Body")) as body:
                return resp, body.read()

        got = self.prefix._call("read", get)
        if got is None:
            raise SourceChanged(CHANGED)
        return got

    def identity(self) -> Identity:
        return self.version if self.version is not None else self.prefix._head(self.path)[0]

    def close(self) -> None:
        """Nothing is held open between ranges."""

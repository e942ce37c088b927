"""A bucket and key prefix of S3-compatible storage as a source (REQUIREMENTS F1, F2): ``s3://bucket/prefix``.

The client is built by the same code as the S3 device (``devices.s3.client_for``: the
URL's ``?endpoint=``, ``?profile=``, ``?region=`` over the standard AWS configuration),
on first use; errors are mapped by the same call (``devices.s3.call``). One object
serves one thread; ``close()`` ends the client.

The prefix is a tree whose directories are the ``/``-separated parts of its keys (mode
0755, mtime of the newest object); objects are files (mode 0644, mtime = LastModified),
recorded under ``/<bucket>/<key>``. A key that cannot be a path (empty, ``.`` or ``..``
parts, or one below another object's name) is reported and skipped. S3 tells size and
whole-second mtime only: ``fields`` is size and mtime (``ctime_ns`` is the mtime).

Every range of one open object is fetched with ``If-Match`` on the ETag seen when it was
opened, so an object replaced while it is read raises SourceChanged instead of mixing
two versions.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions

from parbackup.devices.s3 import call, client_for
from parbackup.devices.url import parse_url
from parbackup.entries import DIR, FILE, Entries
from parbackup.errors import DeviceError, SourceError
from parbackup.sources.base import ErrorFunc, Identity, Source, SourceChanged, SourceSpec
from parbackup.sources.sized import CHANGED, SizedReader, check_unchanged

_T = TypeVar("_T")
DIR_MODE, FILE_MODE = 0o040755, 0o100644


def _seconds_ns(obj: dict) -> int:
    return int(obj["LastModified"].timestamp()) * 1_000_000_000


class S3Prefix(Source):
    """``s3://bucket/prefix``; see the module docstring."""

    fields = ("size", "mtime")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.url = parse_url(spec.name)
        self.where = spec.display or self.url.display
        self.bucket = self.url.host
        self.prefix = self.url.path.strip("/")
        self.top = f"/{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.s3: Any = None

    def _call(self, what: str, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn`` with the client (made on first use); every error is a SourceError."""
        try:
            if self.s3 is None:
                self.s3 = client_for(self.url)
            s3 = self.s3
            return call(what, lambda: fn(s3))
        except DeviceError as exc:
            raise SourceError(str(exc)) from exc

    def _key(self, path: str) -> str:
        """The key of the object recorded as ``path`` (``/<bucket>/<key>``)."""
        if not path.startswith(self.top + "/"):
            raise SourceError(f"{path}: not in the source {self.where}")
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
                        os.fsencode(path), FILE, size, FILE_MODE, 0, 0, mtime, mtime, source=index
                    )
                    above.append(path)
        for row in dirs.values():
            out.mtime_ns[row] = out.ctime_ns[row] = newest

    def _head(self, path: str) -> tuple[Identity, str]:
        key = self._key(path)
        head = self._call(path, lambda s: s.head_object(Bucket=self.bucket, Key=key))
        mtime = _seconds_ns(head)
        return Identity(int(head["ContentLength"]), mtime, mtime), head.get("ETag", "")

    def open(self, path: str, expect: Identity | None = None) -> _S3Reader:
        now, etag = self._head(path)
        check_unchanged(self, path, expect, now)
        return _S3Reader(self, path, now.size, etag)

    def identity(self, path: str) -> Identity | None:
        try:
            return self._head(path)[0]
        except SourceError:
            return None


class _S3Reader(SizedReader):
    """Byte ranges of one object, each fetched only if it is still the version opened."""

    def __init__(self, prefix: S3Prefix, path: str, size: int, etag: str) -> None:
        super().__init__(path, size)
        self.prefix, self.etag = prefix, etag
        self.key = prefix._key(path)

    def fetch(self, offset: int, length: int) -> bytes:
        bucket, key = self.prefix.bucket, self.key
        condition = {"IfMatch": self.etag} if self.etag else {}

        def get(s3: Any) -> bytes | None:
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
                    return b""  # it shrank below the offset
                raise
            with contextlib.closing(resp["Body"]) as body:
                return body.read()

        data = self.prefix._call(self.path, get)
        if data is None:
            raise SourceChanged(f"{self.path}: {CHANGED}")
        return data

    def identity(self) -> Identity:
        return self.prefix._head(self.path)[0]

    def close(self) -> None:
        """Nothing is held open between ranges."""

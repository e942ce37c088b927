"""A directory tree on an SSH host as a source (F1, F2): ``sftp://[user@]host[:port]/path``.

The source logs in through the same code as the SFTP device (``devices.sftplink.connect``):
the same ``~/.ssh/config``, agent, ``?identity=``, ``?known_hosts=`` and host key checks
(``PARBACKUP_ACCEPT_NEW_HOST_KEYS``). It connects on first use and ``close()`` ends the
connection; one object serves one thread. A connection that drops is made again on the
next call. Options the source does not use (a device's ``?capacity=``, a typo) are a
UsageError when it is made. SFTP names are UTF-8 (paramiko decodes them so): a directory
holding another name is reported and skipped.

Entries are recorded under ``/<host>/<absolute remote path>``, so a remote tree restores
to ``TARGET/<host>/...`` and never collides with a local one. SFTP tells no ctime and no
inode, and mtime in whole seconds: ``fields`` is size and mtime (``ctime_ns`` is the mtime).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Callable
from typing import TypeVar

import paramiko

from parbackup.devices.registry import check_options
from parbackup.devices.sftplink import (
    SFTP_ERRORS,
    connect,
    map_error,
    read_range,
    remote_path,
    timeout_of,
)
from parbackup.devices.url import parse_url
from parbackup.entries import DIR, FILE, SYMLINK, Entries
from parbackup.errors import DeviceError, SourceError, UsageError
from parbackup.sources.base import ErrorFunc, Identity, Source, SourceChanged, SourceSpec
from parbackup.sources.sized import SizedReader, check_unchanged

_T = TypeVar("_T")


def _identity(attrs: paramiko.SFTPAttributes) -> Identity:
    mtime_ns = int(attrs.st_mtime or 0) * 1_000_000_000
    return Identity(attrs.st_size or 0, mtime_ns, mtime_ns)


def _looks(attrs: paramiko.SFTPAttributes) -> tuple:
    """All SFTP tells of a file: what an lstat and an fstat of the same file share."""
    return (attrs.st_mode, attrs.st_uid, attrs.st_gid, attrs.st_size, attrs.st_mtime)


class SftpTree(Source):
    """``sftp://[user@]host[:port]/path``; see the module docstring."""

    fields = ("size", "mtime")
    options = frozenset({"identity", "known_hosts", "timeout"})

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.url = parse_url(spec.name)
        self.where = spec.display or self.url.display
        check_options(self.url, self.options, "source")
        try:
            self.timeout = timeout_of(self.url)
        except ValueError as exc:
            raise UsageError(f"{self.where}: bad option value ({exc})") from None
        self.ssh: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self.top = ""  # the root's absolute path on the server, known once connected

    # -- connection ------------------------------------------------------------------------
    def _call(
        self, what: str, fn: Callable[[paramiko.SFTPClient], _T], *, again: bool = True
    ) -> _T:
        """Run ``fn`` on the session (connecting first); every error is a SourceError.

        A call on a session that turns out lost is made once more on a new one (unless
        ``again`` is False: a call on an open file, which only the old session knew).
        """
        fresh = self.sftp is None
        try:
            if self.sftp is None:
                self.ssh, self.sftp = connect(self.url, self.timeout)
            return fn(self.sftp)
        except DeviceError as exc:  # connect() failed: the message names the URL
            raise SourceError(str(exc)) from exc
        except UnicodeDecodeError as exc:  # paramiko decodes every name it is sent as UTF-8
            raise SourceError(f"{what}: a name that is not UTF-8: {exc.object!r}") from exc
        except SFTP_ERRORS as exc:
            error = map_error(exc, what, self.ssh)
            if error.transient:
                self.close()  # the next call connects again
                if again and not fresh:
                    return self._call(what, fn, again=False)
            raise SourceError(str(error)) from exc

    def _root(self) -> str:
        if not self.top:
            self.top = self._call(self.where, lambda s: s.normalize(remote_path(self.url)))
        return self.top

    def _remote(self, path: str) -> str:
        """The server path of an entry recorded as ``path`` (``/<host>/...``)."""
        top = self._root()
        prefix = f"/{self.url.host}"
        remote = posixpath.normpath(path[len(prefix) :]) if path.startswith(prefix + "/") else ""
        if not remote or (remote != top and not remote.startswith(top.rstrip("/") + "/")):
            raise SourceError(f"not in the source {self.where}")
        return remote

    def close(self) -> None:
        client, self.ssh, self.sftp = self.ssh, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # -- the interface ---------------------------------------------------------------------
    def scan(self, out: Entries, index: int, on_error: ErrorFunc) -> None:
        top = self._root()
        root = self._call(self.where, lambda s: s.lstat(top))
        prefix = f"/{self.url.host}"
        if not self._add(out, index, prefix + top.rstrip("/"), top, root):  # "/": /<host>
            raise SourceError(f"{self.where}: not a regular file, directory or symlink")
        if not stat.S_ISDIR(root.st_mode or 0):
            return
        skip = dict(self.spec.select.automatic)  # a backup device inside the tree
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                listing = self._call("list", lambda s, d=directory: s.listdir_attr(d))
            except SourceError as exc:
                on_error(prefix + directory, str(exc))
                continue
            subdirs = []
            for attrs in sorted(listing, key=lambda a: a.filename):
                path = posixpath.join(directory, attrs.filename)
                if prefix + path in skip:  # neither listed nor entered
                    self.excluded.add(prefix + path, skip[prefix + path])
                    continue
                try:
                    added = self._add(out, index, prefix + path, path, attrs)
                except SourceError as exc:
                    on_error(prefix + path, str(exc))
                    continue
                if not added:
                    on_error(prefix + path, "special file not backed up")
                elif stat.S_ISDIR(attrs.st_mode or 0):
                    subdirs.append(path)
            stack.extend(reversed(subdirs))

    def _add(
        self, out: Entries, index: int, record: str, path: str, attrs: paramiko.SFTPAttributes
    ) -> bool:
        """Append one entry; False (nothing appended) for a special file."""
        mode = attrs.st_mode or 0
        link = ""
        if stat.S_ISREG(mode):
            kind, size = FILE, attrs.st_size or 0
        elif stat.S_ISDIR(mode):
            kind, size = DIR, 0
        elif stat.S_ISLNK(mode):
            kind, size = SYMLINK, 0
            link = self._call("readlink", lambda s: s.readlink(path)) or ""
        else:
            return False
        ident = _identity(attrs)
        out.append(
            os.fsencode(record),
            kind,
            size,
            mode,
            attrs.st_uid or 0,
            attrs.st_gid or 0,
            ident.mtime_ns,
            ident.ctime_ns,
            source=index,
            link=os.fsencode(link),
        )
        return True

    def open(self, path: str | bytes, expect: Identity | None = None) -> _SftpReader:
        """Open the file if it is still a regular file. SFTP has no O_NOFOLLOW: the file is
        checked before opening (lstat) and the open one compared with it (fstat), so a file
        swapped for a symlink in between is refused unless the target looks the same."""
        path = os.fsdecode(path)
        remote = self._remote(path)
        before = self._call("open", lambda s: s.lstat(remote))
        if not stat.S_ISREG(before.st_mode or 0):
            raise SourceChanged("no longer a regular file")
        fh = self._call("open", lambda s: s.open(remote, "rb"))
        reader = _SftpReader(self, fh)
        try:
            after = self._call("open", lambda _: fh.stat(), again=False)
            if _looks(after) != _looks(before):
                raise SourceChanged("file changed while being opened")
            now = _identity(after)
            check_unchanged(self, expect, now)
        except SourceError:
            reader.close()
            raise
        reader.size = now.size
        return reader

    def identity(self, path: str) -> Identity | None:
        remote = self._remote(path)
        try:
            attrs = self._call("stat", lambda s: s.lstat(remote))
        except SourceError:
            return None
        return _identity(attrs) if stat.S_ISREG(attrs.st_mode or 0) else None


class _SftpReader(SizedReader):
    """Byte ranges of one open remote file; pipelined reads (``readv``)."""

    def __init__(self, tree: SftpTree, fh: paramiko.SFTPFile) -> None:
        super().__init__(0)  # the size is set once the open file is checked
        self.tree, self.fh = tree, fh

    def fetch(self, offset: int, length: int) -> bytes:
        def read(_: paramiko.SFTPClient) -> bytes:
            try:
                return read_range(self.fh, offset, length)
            except EOFError:  # the server's end of file (or a lost link: stat tells)
                self.fh.stat()
                return b""

        return self.tree._call("read", read, again=False)

    def identity(self) -> Identity:
        return _identity(self.tree._call("stat", lambda _: self.fh.stat(), again=False))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()

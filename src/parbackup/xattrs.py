"""A file's extended attributes: read without following links, carried as the kind-8
"meta" payload, set back on restore (REQUIREMENTS E3).

On Linux every kind of extra metadata is an extended attribute: ``user.*``,
``trusted.*``, ``security.*`` (file capabilities are ``security.capability``, SELinux
labels ``security.selinux``) and ``system.*`` (POSIX ACLs are
``system.posix_acl_access`` and ``system.posix_acl_default``). Backing up every
attribute the kernel lists is therefore backing up all of them; ownership travels in the
record header (uid, gid) as before.

The payload (docs/FORMAT.md, "Kind 8: meta")::

    version:u8 (1)  count:u16  count x ( name_len:u8  name  value_len:u32  value )

names unique, in ascending byte order, 1..255 bytes without NUL; values at most 64 KiB;
the whole payload at most ``MAX_META`` bytes. One encoding per set of attributes, and a
decoder that rejects everything else with FormatError (never another exception).

A leaf module (imports only errors): sources read with it, format and the catalog store
its bytes, readback sets them back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct
import threading
from collections.abc import Callable, Mapping

from parbackup.errors import FormatError

META_VERSION = 1
MAX_META = 64 * 1024
"""Bound on the encoded attributes of one file. A file whose attributes take more is
backed up without them, and the backup names it (a warning, never a failure)."""
MAX_NAME = 255
MAX_VALUE = 64 * 1024

_HEAD = struct.Struct("<BH")
_VALUE_LEN = struct.Struct("<I")
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
_QUIET = {*_UNSUPPORTED, errno.ENOENT}
"""Nothing to say: no attributes here, or the entry vanished (reading it says so)."""
ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
CAPABILITY = "security.capability"


_AT_SYMLINK_NOFOLLOW = 0x100
_GETXATTRAT, _LISTXATTRAT = 464, 465  # Linux 6.13+, the same number on these machines
_AT_MACHINES = {"x86_64", "aarch64", "riscv64"}


class _XattrArgs(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class _At(threading.local):
    """``listxattrat``/``getxattrat``: attributes of a name inside an open directory,
    without following it, in one system call (the ``/proc/self/fd`` path costs a
    lookup in /proc per entry, several times the scan's own cost). ``usable`` turns
    False on a kernel without them (ENOSYS), and ``read`` falls back to that path."""

    usable = platform.system() == "Linux" and platform.machine() in _AT_MACHINES

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(MAX_VALUE)  # also XATTR_LIST_MAX
        self.args = _XattrArgs()
        self.call = ctypes.CDLL(None, use_errno=True).syscall if self.usable else None
        if self.call is not None:
            self.call.restype = ctypes.c_long

    def _check(self, n: int, name: bytes) -> int:
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                _At.usable = False
            raise OSError(err, os.strerror(err), os.fsdecode(name))
        return n

    def list(self, fd: int, name: bytes) -> list[str]:
        n = self.call(_LISTXATTRAT, fd, name, _AT_SYMLINK_NOFOLLOW, self.buf,
                      ctypes.c_size_t(MAX_VALUE))  # fmt: skip
        if not self._check(n, name):
            return []
        raw = ctypes.string_at(self.buf, n)  # not .raw: that copies the whole buffer
        return [os.fsdecode(a) for a in raw.split(b"\0") if a]

    def get(self, fd: int, name: bytes, attr: str) -> bytes:
        self.args.value, self.args.size = ctypes.addressof(self.buf), MAX_VALUE
        size = ctypes.c_size_t(ctypes.sizeof(self.args))
        n = self.call(_GETXATTRAT, fd, name, _AT_SYMLINK_NOFOLLOW, os.fsencode(attr),
                      ctypes.byref(self.args), size)  # fmt: skip
        return ctypes.string_at(self.buf, self._check(n, name))


_at = _At()


class TooLarge(ValueError):
    """The attributes of one file take more than MAX_META bytes encoded."""


def encode(attrs: Mapping[bytes, bytes]) -> bytes:
    """The canonical payload for ``attrs`` (name -> value). ValueError when a name or value
    is out of range, TooLarge when the whole exceeds MAX_META."""
    out = bytearray(_HEAD.pack(META_VERSION, len(attrs)))
    for name in sorted(attrs):
        value = attrs[name]
        if not 0 < len(name) <= MAX_NAME or b"\0" in name:
            raise ValueError(f"bad attribute name {name!r}")
        if len(value) > MAX_VALUE:
            raise TooLarge(f"attribute {os.fsdecode(name)} takes {len(value)} bytes")
        out += bytes((len(name),)) + name + _VALUE_LEN.pack(len(value)) + value
        if len(out) > MAX_META:
            raise TooLarge(f"extended attributes take over {MAX_META} bytes")
    return bytes(out)


def decode(payload: bytes | bytearray | memoryview) -> dict[bytes, bytes]:
    """The attributes a payload holds; FormatError for anything but ``encode``'s output."""
    data = bytes(payload)
    if len(data) > MAX_META:
        raise FormatError("metadata payload is over its bound")
    if len(data) < _HEAD.size:
        raise FormatError("metadata payload is truncated")
    version, count = _HEAD.unpack_from(data)
    if version != META_VERSION:
        raise FormatError(f"unknown metadata payload version {version}")
    pos, out, last = _HEAD.size, {}, b""
    for _ in range(count):
        if pos >= len(data):
            raise FormatError("metadata payload is truncated")
        n = data[pos]
        name = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if len(name) != n or pos + _VALUE_LEN.size > len(data):
            raise FormatError("metadata payload is truncated")
        if n == 0 or b"\0" in name or name <= last:
            raise FormatError("metadata names are empty, unordered or repeated")
        (size,) = _VALUE_LEN.unpack_from(data, pos)
        pos += _VALUE_LEN.size
        if size > MAX_VALUE or pos + size > len(data):
            raise FormatError("metadata value is out of range")
        out[name] = data[pos : pos + size]
        pos += size
        last = name
    if pos != len(data):
        raise FormatError("metadata payload has trailing bytes")
    return out


def names(payload: bytes) -> list[str]:
    """The attribute names a payload holds, for listings; a damaged payload (a hostile
    catalog) is listed as such instead of ending the listing."""
    try:
        return [os.fsdecode(n) for n in decode(payload)]
    except FormatError as exc:
        return [f"(damaged: {exc})"]


def read(path: bytes, dir_fd: int | None = None) -> tuple[bytes, str]:
    """(payload, warning) for the entry ``path`` names, never following a symlink.

    With ``dir_fd`` ``path`` is a name inside that open directory, reached by
    ``listxattrat``/``getxattrat`` (Linux 6.13+) or else through ``/proc/self/fd``: no
    path walk, so a directory swapped meanwhile is not followed. No attributes, a file
    system without them, or a vanished entry: (b"", ""). Attributes over the bound or
    unreadable: (b"", why), and the file is backed up without them.
    """
    where = b"/proc/self/fd/%d/%s" % (dir_fd, path) if dir_fd is not None else path
    if dir_fd is not None and _At.usable:
        got = _collect(lambda: _at.list(dir_fd, path), lambda name: _at.get(dir_fd, path, name))
        if _At.usable:  # else the kernel has no listxattrat (ENOSYS): by the path instead
            return got
    return _collect(
        lambda: os.listxattr(where, follow_symlinks=False),
        lambda name: os.getxattr(where, name, follow_symlinks=False),
    )


def read_fd(fd: int) -> tuple[bytes, str]:
    """(payload, warning) for the open file ``fd``, as ``read`` gives them: the mover
    reads a regular file's attributes from the descriptor it reads the data through (one
    system call when there are none, and the very file that was read)."""
    try:
        if not os.listxattr(fd):  # most files: one call, and nothing to gather
            return b"", ""
    except OSError:
        pass  # _collect says what it means
    return _collect(lambda: os.listxattr(fd), lambda name: os.getxattr(fd, name))


def _collect(listing: Callable[[], list[str]], get: Callable[[str], bytes]) -> tuple[bytes, str]:
    """(payload, warning) of the attributes ``listing()`` names, each value read by
    ``get`` (see ``read``)."""
    try:
        listed = listing()
    except OSError as exc:
        if exc.errno in _QUIET:
            return b"", ""
        return b"", f"extended attributes not backed up: {exc.strerror or exc}"
    if not listed:
        return b"", ""
    attrs: dict[bytes, bytes] = {}
    try:
        for name in listed:
            try:
                attrs[os.fsencode(name)] = get(name)
            except OSError as exc:
                if exc.errno != errno.ENODATA:  # removed since listed: left out
                    raise
        return (encode(attrs) if attrs else b""), ""
    except OSError as exc:
        return b"", f"extended attributes not backed up: {exc.strerror or exc}"
    except TooLarge as exc:
        return b"", f"{exc} (bound {MAX_META}): backed up without its extended attributes"


def _order(name: bytes) -> tuple[int, bytes]:
    """Capabilities last: a later chown or write would clear them."""
    return (1 if name == CAPABILITY.encode() else 0, name)


def apply(path: str, payload: bytes) -> list[tuple[str, str]]:
    """Set every attribute of ``payload`` on ``path`` itself, never through a symlink
    (its owner and mode already set: chown clears capabilities and chmod rewrites the
    access ACL's mask). Returns (name, why) of each attribute the target refused
    (another file system, no privilege); raises nothing for those."""
    refused: list[tuple[str, str]] = []
    attrs = decode(payload)
    for name in sorted(attrs, key=_order):
        try:
            try:
                os.setxattr(path, name, attrs[name], follow_symlinks=False)
            except PermissionError:
                _set_read_only(path, name, attrs[name])
        except OSError as exc:
            why = (
                "the target file system does not support it"
                if exc.errno in _UNSUPPORTED
                else exc.strerror or str(exc)
            )
            refused.append((os.fsdecode(name), why))
    return refused


def _set_read_only(path: str, name: bytes, value: bytes) -> None:
    """Set an attribute on a file its owner (not root) has no write permission on
    (``user.*`` needs it): add the owner's write bit for that moment, then put the mode
    back (which also puts an access ACL's mask back as it was). PermissionError for
    anything else (a symlink, another owner, a file that was writable)."""
    st = os.lstat(path)
    mode = st.st_mode & 0o7777
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or mode & 0o200:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    os.chmod(path, mode | 0o200, follow_symlinks=False)
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    finally:
        os.chmod(path, mode, follow_symlinks=False)

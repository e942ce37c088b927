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

import errno
import os
import struct
from collections.abc import Mapping

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
ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
CAPABILITY = "security.capability"


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
    """The attribute names a (valid) payload holds, for reports."""
    return [os.fsdecode(n) for n in decode(payload)]


def read(path: bytes, dir_fd: int | None = None) -> tuple[bytes, str]:
    """(payload, warning) for the entry ``path`` names, never following a symlink.

    With ``dir_fd`` ``path`` is a name inside that open directory, reached through
    ``/proc/self/fd`` (no path walk: a directory swapped meanwhile is not followed).
    No attributes, or a file system without them: (b"", ""). Attributes over the bound
    or unreadable: (b"", why) and the file is backed up without them.
    """
    where = b"/proc/self/fd/%d/%s" % (dir_fd, path) if dir_fd is not None else path
    try:
        listed = os.listxattr(where, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return b"", ""
        return b"", f"extended attributes not backed up: {exc.strerror or exc}"
    if not listed:
        return b"", ""
    attrs: dict[bytes, bytes] = {}
    try:
        for name in listed:
            try:
                attrs[os.fsencode(name)] = os.getxattr(where, name, follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.ENODATA:  # removed since listed: left out
                    raise
        return encode(attrs), ""
    except OSError as exc:
        return b"", f"extended attributes not backed up: {exc.strerror or exc}"
    except TooLarge as exc:
        return b"", f"{exc} (bound {MAX_META}): backed up without its extended attributes"


def _order(name: bytes) -> tuple[int, bytes]:
    """Capabilities last: a later chown or write would clear them."""
    return (1 if name == CAPABILITY.encode() else 0, name)


def apply(path: str, payload: bytes, *, follow: bool = True) -> list[tuple[str, str]]:
    """Set every attribute of ``payload`` on ``path`` (its owner and mode already set:
    chown clears capabilities and chmod rewrites the access ACL's mask); never follows
    a symlink unless ``follow``. Returns (name, why) of each attribute the target
    refused (another file system, no privilege); raises nothing for those."""
    refused: list[tuple[str, str]] = []
    attrs = decode(payload)
    for name in sorted(attrs, key=_order):
        try:
            os.setxattr(path, name, attrs[name], follow_symlinks=follow)
        except OSError as exc:
            why = (
                "the target file system does not support it"
                if exc.errno in _UNSUPPORTED
                else exc.strerror or str(exc)
            )
            refused.append((os.fsdecode(name), why))
    return refused

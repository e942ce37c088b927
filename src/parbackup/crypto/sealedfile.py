"""A whole file sealed in chunks: the catalog copies an encrypted catalog puts on devices.

Layout (docs/FORMAT.md "Sealed files"): ``b"PBKC"``, u16 version (1), the key id (16),
a random file id (16), then chunks of at most ``CHUNK`` plaintext bytes, each
``u32 length`` + AES-256-GCM(chunk) (length + 16 bytes), the last one flagged in its
associated data, so a cut, reordered, or swapped chunk is caught. The key is
HKDF(master, salt=file id, info="parbackup sealed file"); the nonce is the chunk number.
Memory stays bounded (one chunk) whatever the file's size.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, BinaryIO

from parbackup.crypto import aead
from parbackup.errors import FormatError, TamperedError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PBKC"
VERSION = 1
CHUNK = 1 << 20
_HEAD = struct.Struct("<4sH16s16s")
_LEN = struct.Struct("<I")


def _cipher(master: bytes, file_id: bytes) -> AESGCM:
    return aead.cipher(aead.derive(master, b"parbackup sealed file", salt=file_id))


def _aad(key_id: bytes, file_id: bytes, index: int, last: bool) -> bytes:
    return MAGIC + key_id + file_id + struct.pack("<QB", index, last)


def seal_file(src: BinaryIO, dst: BinaryIO, master: bytes, key_id: bytes) -> None:
    """Write ``src`` sealed to ``dst``."""
    file_id = os.urandom(16)
    cipher = _cipher(master, file_id)
    dst.write(_HEAD.pack(MAGIC, VERSION, key_id, file_id))
    index = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK) if len(chunk) == CHUNK else b""
        last = not following
        sealed = cipher.encrypt(
            aead.nonce(index, aead.DOMAIN_FILE), chunk, _aad(key_id, file_id, index, last)
        )
        dst.write(_LEN.pack(len(chunk)) + sealed)
        if last:
            return
        chunk, index = following, index + 1


def key_id_of(head: bytes) -> bytes:
    """The key id a sealed file names (to find its key file); FormatError if not one."""
    if len(head) < _HEAD.size:
        raise FormatError("not a sealed parbackup file (too short)")
    magic, version, key_id, _fid = _HEAD.unpack(head[: _HEAD.size])
    if magic != MAGIC or version != VERSION:
        raise FormatError("not a sealed parbackup file of a known version")
    return key_id


def open_file(src: BinaryIO, dst: BinaryIO, master: bytes, what: str) -> None:
    """Write the plaintext of sealed ``src`` to ``dst``; TamperedError if anything was
    changed, cut or reordered (``dst`` then holds a prefix: the caller discards it)."""
    head = src.read(_HEAD.size)
    key_id = key_id_of(head)
    file_id = head[-16:]
    cipher = _cipher(master, file_id)
    index = 0
    while True:
        raw = src.read(_LEN.size)
        if len(raw) != _LEN.size:
            raise TamperedError(f"{what}: sealed file is cut short")
        (n,) = _LEN.unpack(raw)
        if n > CHUNK:
            raise FormatError(f"{what}: sealed chunk length out of range")
        sealed = src.read(n + aead.TAG_SIZE)
        if len(sealed) != n + aead.TAG_SIZE:
            raise TamperedError(f"{what}: sealed file is cut short")
        at_end = not src.read(1)
        if not at_end:
            src.seek(-1, os.SEEK_CUR)
        try:
            plain = cipher.decrypt(
                aead.nonce(index, aead.DOMAIN_FILE), sealed, _aad(key_id, file_id, index, at_end)
            )
        except aead.primitives().InvalidTag as exc:
            raise TamperedError(f"{what}: authentication failed (tampered or wrong key)") from exc
        dst.write(plain)
        if at_end:
            return
        index += 1

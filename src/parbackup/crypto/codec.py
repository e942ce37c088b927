"""The record codec: what turns a payload into the bytes a version-4 record stores, and
back. One object serves a mover (writing) and a reader (reading).

Stored payload of a version-4 record (flags in the record header):

- neither flag: the payload as it is;
- ``FLAG_ZSTD``: the payload compressed with zstd;
- ``FLAG_SEALED``: a 12-byte nonce, then AES-256-GCM (crypto/aead.py) of
  ``u32 meta length, meta, body``, where body is the (possibly compressed) payload and
  meta holds what a plain header would show (mode, uid, gid, mtime, path, link target);
  the clear header then shows none of it.

Nonces: each codec starts at 12 random bytes and counts up by one per record (a
96-bit little-endian counter). Within one codec no two records share a nonce (it would
take 2^96 records); two codecs overlap only if their random starts lie within the
records they write of each other, which is less likely than two random nonces being
equal (the birthday bound random nonces per record had). A codec in a forked child
starts again at new random bytes, so a parent and its child never count from the same
place. A reader takes the nonce from the record, so how it was chosen is not part of
the format; counting spares a ``getrandom`` system call per record.

The codec never sees a file: ``CodecSpec`` is plain, picklable data sent to a mover or a
reader through its channel (never the environment or argv). Its ``repr`` hides the key.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from blake3 import blake3

from parbackup.crypto import aead
from parbackup.crypto.compress import OFF, Compressor, decompress
from parbackup.errors import FormatError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FLAG_ZSTD = 1
FLAG_SEALED = 2
FLAGS_KNOWN = FLAG_ZSTD | FLAG_SEALED
_META = struct.Struct("<IIIqII")
_LEN = struct.Struct("<I")
_LEN_META = struct.Struct("<IIIIqII")
"""``u32 meta length`` and the fixed part of the meta, packed at once."""
_NONCE_MASK = (1 << 96) - 1


@dataclass(frozen=True)
class CodecSpec:
    """How a set's records are stored: compression mode, and the master key (empty when
    the set is not encrypted) with its id."""

    compression: int = OFF
    master: bytes = field(default=b"", repr=False)
    key_id: bytes = b""

    @property
    def encrypted(self) -> bool:
        return bool(self.master)

    @property
    def active(self) -> bool:
        """False when records are written as versions 1/2 (no compression, no key)."""
        return self.encrypted or self.compression != OFF


class RecordMeta(NamedTuple):
    """What a sealed record carries that a plain header shows in the clear (a tuple:
    one is made for every record a mover writes)."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int
    path: bytes
    link: bytes


def label_bytes(label: str) -> bytes:
    """A device label (32 hex digits) as the 16 bytes associated data binds."""
    try:
        raw = bytes.fromhex(label)
    except ValueError:
        raw = label.encode()
    return raw[:16].ljust(16, b"\0")


class Place(NamedTuple):
    """Where a record lies: bound into its associated data."""

    label: bytes
    volume_id: bytes


class Codec:
    """Encodes and decodes the stored payloads of one set's records."""

    def __init__(self, spec: CodecSpec, nonces: Callable[[], bytes] | None = None) -> None:
        self.spec = spec
        self._nonces = nonces or self._next_nonce  # tests fix it for known answers
        self._nonce = 0
        self.reseed()
        _LIVE.add(self)
        self.compressor = Compressor(spec.compression)
        self._mac = aead.digest_key(spec.master) if spec.master else None
        self._keys: dict[tuple[bytes, bytes], bytes] = {}
        self._ciphers: dict[bytes, AESGCM] = {}

    def __repr__(self) -> str:
        return f"Codec(compression={self.spec.compression}, encrypted={self.encrypted})"

    @property
    def encrypted(self) -> bool:
        return self._mac is not None

    def reseed(self) -> None:
        """Start the record nonces at new random bytes (at creation, and in a forked
        child)."""
        self._nonce = int.from_bytes(os.urandom(aead.NONCE_SIZE), "little")

    def _next_nonce(self) -> bytes:
        """The next record nonce (see the module docstring)."""
        n = self._nonce
        self._nonce = (n + 1) & _NONCE_MASK
        return n.to_bytes(aead.NONCE_SIZE, "little")

    # -- checksums -------------------------------------------------------------------------
    def hasher(self) -> Any:
        """A BLAKE3 hasher for payload checksums (keyed in an encrypted set)."""
        return blake3(key=self._mac) if self._mac is not None else blake3()

    def digest(self, data: bytes | memoryview) -> bytes:
        """The checksum of a payload as headers and the catalog keep it."""
        if self._mac is not None:
            return blake3(data, key=self._mac).digest()
        return blake3(data).digest()

    def digest_of(self, flags: int, data: bytes | memoryview) -> bytes:
        """The checksum a record with these flags carries: keyed when it is sealed, plain
        otherwise (a compressed record of a set made before the catalog had its key)."""
        if flags & FLAG_SEALED:
            return self.digest(data)
        return blake3(data).digest()

    def open_record(
        self, header: Any, stored: bytes | memoryview, place: Place | None, what: str
    ) -> tuple[RecordMeta | None, bytes | memoryview]:
        """(sealed metadata or None, plain payload) of one record as read from a volume
        (``header``: its format.RecordHeader), its checksum checked: a record stored as
        it is (versions 1-3), or decoded (version 4). FormatError (TamperedError) when
        it cannot be opened or its checksum does not match."""
        if header.stored < 0:
            if blake3(stored).digest() != header.checksum:
                raise FormatError("payload checksum mismatch")
            return None, stored
        meta, data = self.decode(
            stored,
            flags=header.flags,
            set_id=header.set_id,
            file_id=header.file_id,
            offset=header.offset,
            size=header.size,
            file_size=header.file_size,
            kind=header.code,
            place=place,
            what=what,
        )
        if self.digest_of(header.flags, data) != header.checksum:
            raise FormatError("payload checksum mismatch")
        return meta, data

    def key(self, set_id: bytes, volume_id: bytes) -> bytes:
        """The key of one volume (cached)."""
        which = (set_id, volume_id)
        key = self._keys.get(which)
        if key is None:
            if len(self._keys) > 64:
                self._keys.clear()
            key = self._keys[which] = aead.volume_key_bytes(self.spec.master, set_id, volume_id)
        return key

    def cipher(self, set_id: bytes, volume_id: bytes) -> AESGCM:
        """The cipher of one volume (cached with its key)."""
        key = self.key(set_id, volume_id)
        cipher = self._ciphers.get(key)
        if cipher is None:
            if len(self._ciphers) > 64:
                self._ciphers.clear()
            cipher = self._ciphers[key] = aead.cipher(key)
        return cipher

    # -- records ---------------------------------------------------------------------------
    def encode(
        self,
        payload: bytes | memoryview,
        *,
        set_id: bytes,
        file_id: int,
        offset: int,
        file_size: int,
        kind: int,
        meta: RecordMeta,
        place: Place,
    ) -> tuple[int, bytes | memoryview]:
        """(flags, stored bytes) for one record's payload."""
        packed = self.compressor.compress(payload, file_id) if len(payload) else None
        flags = FLAG_ZSTD if packed is not None else 0
        body = payload if packed is None else packed
        if self._mac is None:
            return flags, body
        flags |= FLAG_SEALED
        head = _encode_meta(meta)
        stored = aead.NONCE_SIZE + len(head) + len(body) + aead.TAG_SIZE
        aad = aead.record_aad(
            set_id,
            file_id,
            offset,
            len(payload),
            file_size,
            stored,
            kind,
            flags,
            place.label,
            place.volume_id,
        )
        parts = [head, body]
        if stored - aead.NONCE_SIZE - aead.TAG_SIZE <= aead.SMALL:
            cipher = self.cipher(set_id, place.volume_id)
            return flags, aead.seal_small(cipher, self._nonces(), parts, aad)
        key = self.key(set_id, place.volume_id)
        return flags, aead.seal_parts(key, self._nonces(), parts, aad)

    def decode(
        self,
        stored: bytes | memoryview,
        *,
        flags: int,
        set_id: bytes,
        file_id: int,
        offset: int,
        size: int,
        file_size: int,
        kind: int,
        place: Place | None,
        what: str,
    ) -> tuple[RecordMeta | None, bytes | memoryview]:
        """(sealed metadata or None, payload) of one stored record; TamperedError when a
        sealed record fails authentication, FormatError when it cannot be decoded."""
        if flags & ~FLAGS_KNOWN:
            raise FormatError(f"{what}: unknown record flags {flags:#x}")
        meta = None
        body: bytes | memoryview = stored
        if flags & FLAG_SEALED:
            if self._mac is None:
                raise FormatError(f"{what}: record is encrypted, but no key was given")
            if place is None:
                raise FormatError(f"{what}: encrypted record without its volume id")
            aad = aead.record_aad(
                set_id,
                file_id,
                offset,
                size,
                file_size,
                len(stored),
                kind,
                flags,
                place.label,
                place.volume_id,
            )
            if len(stored) < aead.NONCE_SIZE + aead.TAG_SIZE:
                raise FormatError(f"{what}: sealed record too short")
            if len(stored) - aead.NONCE_SIZE - aead.TAG_SIZE <= aead.SMALL:
                cipher = self.cipher(set_id, place.volume_id)
                plain: bytes | bytearray = aead.open_small(cipher, stored, aad, what)
            else:
                plain = aead.open_parts(self.key(set_id, place.volume_id), stored, aad, what)
            meta, body = _decode_meta(plain, what)
        if flags & FLAG_ZSTD:
            body = decompress(body, size, what)
        elif len(body) != size:
            raise FormatError(f"{what}: record is cut short")
        return meta, body

    # -- volume metadata -------------------------------------------------------------------
    def seal_volume_meta(self, set_id: bytes, volume_id: bytes, label: bytes, data: bytes) -> bytes:
        """Encrypt a volume header's set metadata (once per volume key: a fixed nonce)."""
        aad = b"PBV4" + set_id + label + volume_id
        nonce = aead.nonce(0, aead.DOMAIN_VOLUME_META)
        return aead.seal(self.cipher(set_id, volume_id), nonce, data, aad)

    def seal_header_meta(self, meta: dict, set_id: bytes, label: bytes, volume_id: bytes) -> dict:
        """The JSON of a version-4 volume header: the volume id in the clear; in an
        encrypted set only ``label``, ``volume``, ``volume_id``, ``key_id`` in the clear and
        the rest sealed."""
        if not self.encrypted:
            return {**meta, "volume_id": volume_id.hex()}
        blob = json.dumps(meta, sort_keys=True).encode()
        sealed = self.seal_volume_meta(set_id, volume_id, label, blob)
        return {
            "label": meta.get("label"),
            "volume": meta.get("volume"),
            "volume_id": volume_id.hex(),
            "key_id": self.spec.key_id.hex(),
            "sealed": base64.b64encode(sealed).decode(),
        }

    def open_header_meta(
        self, meta: dict, set_id: bytes, label: bytes, what: str
    ) -> tuple[dict, bytes]:
        """(set metadata, volume id) of a volume header's JSON, opening sealed metadata
        (FormatError when it cannot be had, TamperedError when it was changed)."""
        try:
            volume_id = bytes.fromhex(str(meta.get("volume_id", "")))
        except ValueError as exc:
            raise FormatError(f"{what}: malformed volume id") from exc
        if "sealed" not in meta:
            return meta, volume_id
        if not self.encrypted:
            raise FormatError(f"{what}: an encrypted volume, and no key was found")
        try:
            sealed = base64.b64decode(str(meta["sealed"]), validate=True)
        except ValueError as exc:
            raise FormatError(f"{what}: malformed sealed metadata") from exc
        plain = self.open_volume_meta(set_id, volume_id, label, sealed, what)
        try:
            opened = json.loads(plain)
        except ValueError as exc:
            raise FormatError(f"{what}: sealed metadata is not JSON") from exc
        if not isinstance(opened, dict):
            raise FormatError(f"{what}: sealed metadata is not an object")
        return {**opened, "label": meta.get("label"), "volume": meta.get("volume")}, volume_id

    def open_volume_meta(
        self, set_id: bytes, volume_id: bytes, label: bytes, data: bytes, what: str
    ) -> bytes:
        """The reverse of ``seal_volume_meta``."""
        aad = b"PBV4" + set_id + label + volume_id
        cipher = self.cipher(set_id, volume_id)
        nonce = aead.nonce(0, aead.DOMAIN_VOLUME_META)
        return aead.open_sealed(cipher, nonce, data, aad, what)


_LIVE: weakref.WeakSet[Codec] = weakref.WeakSet()
"""Every codec of this process, reseeded in a forked child (``os.register_at_fork``)."""


def _reseed_after_fork() -> None:
    for codec in list(_LIVE):
        codec.reseed()


os.register_at_fork(after_in_child=_reseed_after_fork)


def _encode_meta(meta: RecordMeta) -> bytes:
    """``u32 meta length, meta`` of a sealed record's plaintext (before its body)."""
    path, link = meta.path, meta.link
    return (
        _LEN_META.pack(
            _META.size + len(path) + len(link),
            meta.mode,
            meta.uid & 0xFFFFFFFF,
            meta.gid & 0xFFFFFFFF,
            meta.mtime_ns,
            len(path),
            len(link),
        )
        + path
        + link
    )


def _decode_meta(plain: bytes, what: str) -> tuple[RecordMeta, memoryview]:
    view = memoryview(plain)
    if len(view) < _LEN.size + _META.size:
        raise FormatError(f"{what}: sealed record too short")
    (n,) = _LEN.unpack(view[: _LEN.size])
    if n < _META.size or _LEN.size + n > len(view):
        raise FormatError(f"{what}: sealed record metadata out of range")
    mode, uid, gid, mtime, plen, llen = _META.unpack(view[_LEN.size : _LEN.size + _META.size])
    names = _LEN.size + _META.size
    if names + plen + llen != _LEN.size + n:
        raise FormatError(f"{what}: sealed record metadata does not add up")
    path = bytes(view[names : names + plen])
    link = bytes(view[names + plen : names + plen + llen])
    return RecordMeta(mode, uid, gid, mtime, path, link), view[_LEN.size + n :]

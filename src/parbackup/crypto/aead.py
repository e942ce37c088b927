"""Authenticated encryption of records: AES-256-GCM under a key per volume.

Keys (all derived from the master key with HKDF-SHA256, see docs/FORMAT.md "Keys"):

- the *volume key*: HKDF(master, salt=set id, info="parbackup volume" + volume id), where
  the volume id is 16 random bytes written in the clear in that volume's header. Every
  volume, even a volume rewritten under the same name, has its own key;
- the *digest key*: HKDF(master, info="parbackup digest"), which keys the BLAKE3 checksums
  kept in record headers and in the catalog, so they tell nothing about the plaintext.

Nonces never repeat: a record's nonce (12 bytes, stored in front of its ciphertext)
comes from a 96-bit counter that each codec starts at random bytes (crypto/codec.py),
under a key of its own volume; the volume metadata uses the fixed nonce
(0, DOMAIN_VOLUME_META), once per volume key. The associated data binds each record to
its set, file, offset, sizes, kind, flags and place (device label, volume id): a record
swapped between files, sets, volumes or devices fails authentication.

Why not the record's position in the volume as nonce and in the associated data: prune
compacts a volume by copying its live records byte for byte to new positions under the
same volume header (engine/reclaim.py); records bound to their position would not
survive that, and without the key prune cannot re-seal them. Order within a volume needs
no binding: two records of one file differ in their offset, which is bound.
"""

from __future__ import annotations

import struct
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING

from parbackup.errors import TamperedError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_SIZE = 16
DOMAIN_RECORD = 0
DOMAIN_VOLUME_META = 1
DOMAIN_FILE = 2
NONCE_SIZE = 12
_NONCE = struct.Struct("<QI")
_AAD = struct.Struct("<4s16sQQQQHH16s16sQ")


@cache
def primitives() -> SimpleNamespace:
    """cryptography's primitives, imported at their first use (not at the module's, on
    purpose): a backup that neither encrypts nor reads an encrypted set never loads
    OpenSSL, about 8 MB in each of its processes (the dispatcher and every mover). The
    other crypto modules take them from here too."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return SimpleNamespace(
        InvalidTag=InvalidTag,
        hashes=hashes,
        Cipher=Cipher,
        algorithms=algorithms,
        modes=modes,
        AESGCM=AESGCM,
        HKDF=HKDF,
        Scrypt=Scrypt,
    )


def cipher(key: bytes) -> AESGCM:
    """AES-256-GCM under ``key`` (for ``seal`` and ``open_sealed``)."""
    return primitives().AESGCM(key)


def derive(master: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """A 32-byte key for one purpose, derived from the master key."""
    lib = primitives()
    return lib.HKDF(algorithm=lib.hashes.SHA256(), length=32, salt=salt, info=info).derive(master)


def digest_key(master: bytes) -> bytes:
    """The key of the keyed BLAKE3 checksums of an encrypted set."""
    return derive(master, b"parbackup digest")


def volume_key_bytes(master: bytes, set_id: bytes, volume_id: bytes) -> bytes:
    """The key of one volume (see the module docstring)."""
    return derive(master, b"parbackup volume" + volume_id, salt=set_id)


def nonce(position: int, domain: int) -> bytes:
    """The nonce of what lies at ``position`` of a volume, in ``domain``."""
    return _NONCE.pack(position, domain)


def record_aad(
    set_id: bytes,
    file_id: int,
    offset: int,
    size: int,
    file_size: int,
    stored: int,
    kind: int,
    flags: int,
    label: bytes,
    volume_id: bytes,
) -> bytes:
    """The associated data of one record: what it is and where it lies (one pack: the
    stored length last, as it always was)."""
    return _AAD.pack(
        b"PBR4",
        set_id,
        file_id,
        offset,
        size,
        file_size,
        kind,
        flags,
        label,
        volume_id,
        stored,
    )


SMALL = 32 << 10
"""Plaintexts up to this size are sealed and opened by a cached ``AESGCM`` in one call
(about 1-4 µs); larger ones stream through a ``Cipher`` context into one buffer
(``seal_parts``: ~6 µs to set up, then ~10 GB/s, where the one-call form slows down
past 64 KiB). Both give the same bytes."""


def seal_small(cipher: AESGCM, nonce_: bytes, parts: list, aad: bytes) -> bytes:
    """``seal_parts`` for a plaintext of at most ``SMALL`` bytes, with the volume's
    cached cipher: ``nonce || ciphertext || tag``."""
    return nonce_ + cipher.encrypt(nonce_, b"".join(parts), aad)


def open_small(cipher: AESGCM, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
    """``open_parts`` for a sealed plaintext of at most ``SMALL`` bytes."""
    view = memoryview(sealed)
    try:
        return cipher.decrypt(bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:], aad)
    except primitives().InvalidTag:
        raise TamperedError(
            f"{what}: authentication failed (tampered, swapped or replayed)"
        ) from None


def seal_parts(key: bytes, nonce_: bytes, parts: list, aad: bytes) -> bytearray:
    """``nonce || AES-256-GCM(concatenated parts) || tag`` in one buffer, without joining
    the parts first (a record's payload is sealed with no extra copy of it).

    Byte for byte what ``AESGCM(key).encrypt(nonce, b"".join(parts), aad)`` gives after the
    nonce (the known-answer test holds it to that)."""
    size = sum(len(p) for p in parts)
    out = bytearray(NONCE_SIZE + size + TAG_SIZE + 15)  # update_into wants 15 spare bytes
    view = memoryview(out)
    view[:NONCE_SIZE] = nonce_
    lib = primitives()
    enc = lib.Cipher(lib.algorithms.AES(key), lib.modes.GCM(nonce_)).encryptor()
    enc.authenticate_additional_data(aad)
    at = NONCE_SIZE
    for part in parts:
        at += enc.update_into(part, view[at:])
    enc.finalize()
    view[at : at + TAG_SIZE] = enc.tag
    view.release()
    del out[at + TAG_SIZE :]
    return out


def open_parts(key: bytes, sealed: bytes | memoryview, aad: bytes, what: str) -> bytearray:
    """The reverse of ``seal_parts``: the plaintext, only once its tag has been checked."""
    view = memoryview(sealed)
    nonce_, tag = bytes(view[:NONCE_SIZE]), bytes(view[len(view) - TAG_SIZE :])
    body = view[NONCE_SIZE : len(view) - TAG_SIZE]
    out = bytearray(len(body) + 15)
    lib = primitives()
    dec = lib.Cipher(lib.algorithms.AES(key), lib.modes.GCM(nonce_, tag)).decryptor()
    dec.authenticate_additional_data(aad)
    n = dec.update_into(body, out)
    try:
        dec.finalize()
    except lib.InvalidTag:
        raise TamperedError(
            f"{what}: authentication failed (tampered, swapped or replayed)"
        ) from None
    del out[n:]
    return out


def seal(cipher: AESGCM, nonce_: bytes, data: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate; the result is ``len(data) + TAG_SIZE`` bytes."""
    return cipher.encrypt(nonce_, data, aad)


def open_sealed(cipher: AESGCM, nonce_: bytes, data: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt and check; TamperedError naming ``what`` when anything was changed."""
    try:
        return cipher.decrypt(nonce_, data, aad)
    except primitives().InvalidTag:
        raise TamperedError(
            f"{what}: authentication failed (tampered, swapped or replayed)"
        ) from None

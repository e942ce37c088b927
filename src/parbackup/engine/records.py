"""The record headers a mover writes (docs/FORMAT.md): versions 1-3 as they are, and
version 4 for a set with compression or encryption, whose payload the codec stores.

Items are the dispatcher's work tuples (engine/messages.py: ``FID`` ... ``META``).
A kind-8 "meta" record (a file's extended attributes) is written with the item of its
file: its offset is 0, its size and file size its payload's length, and it has no link.

The codec (crypto/codec.py, with zstandard and the AEAD) is imported by the first
version-4 record, not with this module: a plain backup's movers never load it (their
fork server's imports are every backup's CPU, engine/movers.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from parbackup.engine.messages import FID, FSIZE, GID, KIND, LINK, MODE, MTIME, PATH, UID
from parbackup.entries import KINDS
from parbackup.format import KIND_CODES, encode_record_header

if TYPE_CHECKING:
    from parbackup.crypto.codec import Codec, Place

META_CODE = KIND_CODES["meta"]
_KIND_CODES = [KIND_CODES[str(k)] for k in KINDS]


def plain_header(
    set_id: bytes, item: tuple, offset: int, n: int, digest: bytes, code: int | None = None
) -> bytes:
    """A version 1-3 record header (no compression, no encryption); ``code``: META_CODE
    for the item's meta record, else the item's own kind."""
    meta = code is not None
    return encode_record_header(
        code if meta else _KIND_CODES[item[KIND]],
        set_id,
        item[FID],
        offset,
        n,
        n if meta else item[FSIZE],
        item[MODE],
        item[UID],
        item[GID],
        item[MTIME],
        digest,
        item[PATH],
        b"" if meta else item[LINK],
    )


@functools.lru_cache(maxsize=64)
def _place(label: str, volume_id: bytes) -> Place:
    """The place of a mover's records in its current volume (made once per volume)."""
    from parbackup.crypto.codec import Place, label_bytes

    return Place(label_bytes(label), volume_id)


def stored_record(
    codec: Codec,
    set_id: bytes,
    label: str,
    volume_id: bytes,
    item: tuple,
    offset: int,
    payload: memoryview | bytes,
    code: int | None = None,
) -> tuple[memoryview | bytes, bytes, bytes]:
    """(stored bytes, version-4 header, checksum) of one record (crypto/codec.py). In an
    encrypted set the clear header shows no names, modes, owners or times."""
    from parbackup.crypto.codec import RecordMeta

    n = len(payload)
    meta = code is not None
    file_size = n if meta else item[FSIZE]
    kind = code if meta else _KIND_CODES[item[KIND]]
    about = RecordMeta(
        item[MODE], item[UID], item[GID], item[MTIME], item[PATH], b"" if meta else item[LINK]
    )
    flags, stored = codec.encode(
        payload,
        set_id=set_id,
        file_id=item[FID],
        offset=offset,
        file_size=file_size,
        kind=kind,
        meta=about,
        place=_place(label, volume_id),
    )
    digest = codec.digest(payload)
    shown = RecordMeta(0, 0, 0, 0, b"", b"") if codec.encrypted else about
    header = encode_record_header(
        kind,
        set_id,
        item[FID],
        offset,
        n,
        file_size,
        shown.mode,
        shown.uid,
        shown.gid,
        shown.mtime_ns,
        digest,
        shown.path,
        shown.link,
        flags,
        len(stored),
    )
    return stored, header, digest

"""Incremental selection (REQUIREMENTS F3): which files an earlier set already holds.

A file is unchanged when its size, mtime, ctime and inode number all equal what the
earlier set recorded (``rehash``: when its content hashes to the checksums of the earlier
records instead). An unchanged file is not copied again: the new set lists references to
the earlier set's records, which keep pointing at the set whose volume holds the bytes
(``RecordRef.origin_set``), so restoring any set of a chain reads each byte straight from
where it lies. Only regular files with payload are reused; directories, links and empty
files cost nothing to write again.

This module is pure: the engine gives it the earlier set as data and, for ``rehash``,
a function that opens a source file (the Source interface).
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field, replace

from blake3 import blake3

from parbackup.coverage import complete
from parbackup.entries import FILE, Entries
from parbackup.errors import SourceError
from parbackup.model import FileEntry, Kind, RecordRef
from parbackup.sources.base import FileReader

_READ = 1 << 20


@dataclass(frozen=True)
class Previous:
    """What an earlier set holds for one path: its entry and the records of its bytes."""

    entry: FileEntry
    records: tuple[RecordRef, ...]


@dataclass
class Reuse:
    """The outcome of a selection: files not to copy, and the records the new set lists."""

    parent: str = ""
    files: set[int] = field(default_factory=set)
    records: list[tuple[int, RecordRef]] = field(default_factory=list)
    bytes: int = 0
    metas: dict[int, bytes] = field(default_factory=dict)
    """Extended attributes of reused files, as the earlier set holds them (unchanged:
    setting one changes the ctime). Nothing reads a reused file, so nothing else would."""


def origin_of(set_id: str, file_id: int, ref: RecordRef) -> RecordRef:
    """``ref`` (a record of ``set_id``'s file ``file_id``) with its true origin filled in."""
    if ref.origin_set:
        return ref
    return replace(ref, origin_set=set_id, origin_file=file_id)


def same_metadata(new: FileEntry, old: FileEntry) -> bool:
    """Unchanged by size, mtime, ctime and inode; an unknown ctime (0) counts as changed."""
    return old.ctime_ns != 0 and (new.size, new.mtime_ns, new.ctime_ns, new.ino) == (
        old.size,
        old.mtime_ns,
        old.ctime_ns,
        old.ino,
    )


COARSE_NS = 10_000_000
"""A recorded ctime that is a multiple of this comes from a file system whose clock
ticks in hundredths of a second or more (whole seconds on ext4 with 128-byte inodes, on
many network file systems; FAT): a nanosecond clock gives one once in ten million."""


def racy(ctime_ns: int, racy_from_ns: int) -> bool:
    """Whether a file whose ctime was recorded as ``ctime_ns`` may have been read in the
    same tick of its file system's coarse clock as a change made after the read, which
    then left every time as recorded: its times cannot prove it unchanged (git's
    "racily clean" entries). ``racy_from_ns``: a time before the earliest moment the
    earlier set can have read it, less the coarsest tick."""
    return ctime_ns % COARSE_NS == 0 and ctime_ns >= racy_from_ns


def same_content(reader: FileReader, records: Sequence[RecordRef]) -> bool:
    """True when every record's range of the file hashes to that record's checksum."""
    buf = memoryview(bytearray(_READ))
    try:
        for ref in sorted(records, key=lambda r: r.offset):
            hasher, at, end = blake3(), ref.offset, ref.offset + ref.size
            while at < end:
                got = reader.readinto(at, buf[: min(_READ, end - at)])
                if not got:
                    return False
                hasher.update(buf[:got])
                at += got
            if hasher.digest() != ref.checksum:
                return False
        return True
    except SourceError:
        return False
    finally:
        reader.close()


Opener = Callable[[int], FileReader]
"""open(entry row) -> a reader over that file (for ``rehash``)."""


def select(
    entries: Entries,
    parent: str,
    previous: dict[str, Previous],
    *,
    rehash: Opener | None = None,
    racy_from_ns: int | None = None,
    exact: Set[int] = frozenset(),
) -> Reuse:
    """Decide for every entry whether the earlier set ``parent`` already holds it.

    With ``rehash`` the file's content is compared with the earlier records (each file
    opened through it); otherwise its size, mtime, ctime and inode number, and a file
    whose coarse recorded ctime is at or after ``racy_from_ns`` is copied again
    (``racy``), unless its source number is in ``exact`` (kinds whose identity tells
    the content: ``Source.content_identity``).
    """
    out = Reuse(parent=parent)
    if not previous:
        return out
    kind, size = entries.kind, entries.size
    for fid in range(len(entries)):
        if kind[fid] != FILE or size[fid] == 0:
            continue
        old = previous.get(entries.path(fid))
        if old is None or old.entry.kind is not Kind.FILE or old.entry.size != size[fid]:
            continue
        if not complete(old.records, size[fid]):
            continue
        meta = old.entry.meta
        if rehash is not None:
            try:
                reader = rehash(fid)
            except SourceError:
                continue
            got = reader.xattrs()  # as they are now: the times may have changed
            if got is not None and got[1]:
                reader.close()
                continue  # copied again: the mover says why they cannot be kept
            if not same_content(reader, old.records):
                continue
            meta = meta if got is None else got[0]
        else:
            entry = entries.entry(fid)
            if stat.S_ISBLK(entry.mode) or not same_metadata(entry, old.entry):
                continue  # a device node's times say nothing about its content
            if (
                racy_from_ns is not None
                and entries.source[fid] not in exact
                and racy(old.entry.ctime_ns, racy_from_ns)
            ):
                continue
        out.files.add(fid)
        out.records.extend((fid, ref) for ref in old.records)
        if meta:
            out.metas[fid] = meta
        out.bytes += size[fid]
    return out


def volume_needs(reuse: Reuse) -> dict[tuple[str, str], int]:
    """(device label, volume) -> the bytes the reused records need it to hold: the end
    of the last of them in it."""
    need: dict[tuple[str, str], int] = {}
    for _fid, ref in reuse.records:
        key = (ref.label, ref.volume)
        end = ref.position + ref.header_size + ref.length
        if end > need.get(key, 0):
            need[key] = end
    return need


def without_volumes(reuse: Reuse, lacking: Set[tuple[str, str]]) -> set[int]:
    """Take out of ``reuse`` (in place) every file with a record in one of the ``lacking``
    volumes ((label, volume) pairs): such a file is copied again, so the new set never
    points at bytes its device no longer holds. Returns the files taken out."""
    if not lacking:
        return set()
    gone = {fid for fid, ref in reuse.records if (ref.label, ref.volume) in lacking}
    kept = []
    for fid, ref in reuse.records:
        if fid in gone:
            reuse.bytes -= ref.size
        else:
            kept.append((fid, ref))
    reuse.records = kept
    reuse.files -= gone
    for fid in gone:
        reuse.metas.pop(fid, None)
    return gone

"""The mover's path for small files (``small_in_place``, engine/moversource.py),
checked against the general path it stands in for.

Two in-process movers write the same items of a random tree: one as it is, one with the
fast path turned off (every file through ``copy_range`` and ``record``, the way a file
too large for it goes). Their volumes must hold the same bytes after the volume header
(which differs only in label and time) and tell the same references, attributes and
problems: every record kind, names of every length, files of every size around
``SMALL`` and the gather buffer's edges, extended attributes, files sent in parts, a
read root apart from the recorded one. A file that is not as scanned when the fast path
reads it (rewritten, grown, shrunk, replaced, a symlink, gone: before the read, or
between the read and the check after it) leaves no trace of that read, and the general
path then reports it as it did. A compressed set never takes the fast path.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from parbackup.crypto.codec import CodecSpec
from parbackup.crypto.compress import AUTO
from parbackup.devices.registry import open_device
from parbackup.engine.messages import (
    LINK,
    PATH,
    SIZE,
    Begin,
    Durable,
    Label,
    Metas,
    MoverSpec,
    Problem,
)
from parbackup.engine.mover import _Mover
from parbackup.engine.moversource import GATHER, ROOM, SMALL
from parbackup.entries import FILE, SYMLINK
from parbackup.format import MAX_NAME, PLAIN_HEADER_FIXED, checksum
from parbackup.sources.base import FileReader, Identity, Source, SourceSpec

SET_ID = bytes(range(16))


class Told:
    """The mover's end of a channel: what it was told, in order."""

    def __init__(self) -> None:
        self.msgs: list[object] = []

    def send(self, msg: object) -> None:
        self.msgs.append(msg)


class _Counted(_Mover):
    """A mover that counts the files its fast path wrote."""

    in_place: int = 0
    full: int = 0
    """Calls that found no room after what was gathered (a write first)."""

    def small_in_place(self, item: tuple, attrs: bool) -> bytes | None:
        hsize = PLAIN_HEADER_FIXED + len(item[PATH]) + len(item[LINK])
        self.full += self.fill + hsize + item[SIZE] > ROOM
        got = super().small_in_place(item, attrs)
        self.in_place += got is not None
        return got


class _General(_Mover):
    """A mover without the fast path: every file read by ``copy_range``."""

    def small_file(self, item: tuple, attrs: bool) -> bytes | None:
        return None


def start(kind: type[_Mover], device: Path, spec: SourceSpec, codec=None) -> _Mover:
    device.mkdir()
    mover = kind(MoverSpec(0, str(device), (spec,), checkpoint_bytes=1 << 40), Told())  # type: ignore[arg-type]
    mover.device = open_device(str(device))
    mover.device.open()
    mover.handle(Label())
    mover.handle(Begin(SET_ID, {"note": "review16"}, codec))
    return mover


def item_of(seq: int, path: Path, recorded: bytes, off: int = 0, size: int = -1) -> tuple:
    st = os.lstat(path)
    link = os.fsencode(os.readlink(path)) if path.is_symlink() else b""
    whole = 0 if link else st.st_size
    return (
        seq, seq, off, whole - off if size < 0 else size, SYMLINK if link else FILE, whole,
        st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
        st.st_dev, 0, recorded, link, None, b"",
    )  # fmt: skip


def random_tree(root: Path, rng: random.Random) -> list[Path]:
    """Files of every small size (and a few large ones), names short and long, symlinks
    with long targets, extended attributes on some."""
    sizes = [0, 1, SMALL - 1, SMALL, SMALL + 1, GATHER - 200, GATHER + 3]
    sizes += [rng.choice([rng.randint(0, 4000), rng.randint(0, SMALL)]) for _ in range(70)]
    sizes += [rng.randint(SMALL, 3 << 20) for _ in range(3)]
    out = []
    deep = root / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    for i, n in enumerate(sizes):
        where = deep if i % 3 == 0 else root
        path = where / f"f{i:03d}{'n' * rng.choice([0, 10, 240])}"[:250]
        path.write_bytes(rng.randbytes(n))
        if i % 11 == 0:
            os.setxattr(path, "user.review", b"x" * rng.randint(1, 300))
        out.append(path)
        if i % 9 == 0:
            link = where / f"l{i:03d}"
            os.symlink("t" * rng.choice([1, 1000, 4000]), link)
            out.append(link)
    rng.shuffle(out)
    return out


def written(mover: _Mover) -> tuple[bytes, list, list, list, int]:
    """Commit, then: the volumes' bytes after their headers, the references told
    (volume names aside), the attributes and problems told, the bytes counted sent."""
    mover.commit()
    mover.device.close()
    told = mover.channel.msgs  # type: ignore[attr-defined]
    refs = [r[:1] + r[2:] for m in told if isinstance(m, Durable) for r in m.rows()]
    firsts = {}
    for m in told:
        if isinstance(m, Durable):
            for r in m.rows():
                firsts.setdefault(r[1], r[2])
    volumes = b"".join(
        v.read_bytes()[firsts[f"sets/{SET_ID.hex()}/{v.name}"]:]
        for v in sorted(Path(mover.spec.url).rglob("*.pbv"))
    )  # fmt: skip
    metas = [x for m in told if isinstance(m, Metas) for x in m.rows]
    problems = [(m.file, m.kind) for m in told if isinstance(m, Problem)]
    return volumes, refs, metas, problems, mover.sent


def items_of(files: list[Path], root: Path, recorded: str) -> list[tuple]:
    items = []
    for path in files:
        name = os.fsencode(recorded + str(path)[len(str(root)) :])
        item = item_of(len(items) + 1, path, name)
        if item[4] == FILE and item[3] > 2 * SMALL:  # sent in two parts, as a split
            half = item[3] // 2
            items.append(item_of(len(items) + 1, path, name, 0, half))
            items.append(item_of(len(items) + 1, path, name, half))
        else:
            items.append(item)
    return items


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("apart", [False, True])
def test_the_fast_path_writes_the_general_paths_bytes(tmp_path: Path, seed: int, apart) -> None:
    root = tmp_path / "src"
    files = random_tree(root, random.Random(seed))
    recorded = "/recorded/elsewhere" if apart else str(root)
    spec = SourceSpec("tree", recorded, recorded, str(root) if apart else "")
    items = items_of(files, root, recorded)
    results, counted = [], []
    for kind, name in ((_Counted, "fast"), (_General, "general")):
        mover = start(kind, tmp_path / name, spec)
        for item in items:
            mover.write_item(item)
        results.append(written(mover))
        counted.append(getattr(mover, "in_place", None))
    fast, general = results
    assert fast[1] == general[1] and len(fast[1]) >= len(items)  # references
    assert fast[2] == general[2] and fast[2]  # attributes read (some files have them)
    assert fast[3] == general[3] == []  # no problems
    assert fast[0] == general[0]  # every byte of every record
    assert fast[4] == general[4] == sum(i[3] for i in items)  # bytes counted sent
    # every whole small file took the fast path (records straddling the 1 MiB writes)
    small = sum(1 for i in items if i[4] == FILE and i[3] == i[5] and 0 < i[3] <= SMALL)
    assert counted == [small, None] and small > 50


def rewrite(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes(255 - b for b in data))  # same size, other bytes
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def grow(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"more")


def shrink(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def replace(path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(path.read_bytes())
    os.replace(other, path)


def symlink(path: Path) -> None:
    path.unlink()
    os.symlink("elsewhere", path)


def gone(path: Path) -> None:
    path.unlink()


CHANGES = {
    "rewritten": (rewrite, "changed"),
    "grown": (grow, "grew"),
    "shrunk": (shrink, "changed"),
    "replaced": (replace, "changed"),
    "symlink": (symlink, "changed"),
    "gone": (gone, "skipped"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_file_changed_before_the_fast_read_is_reported_as_the_general_path_does(
    tmp_path: Path, change: str
) -> None:
    """The change happens as the file is opened (by either path, through a source that
    changes it first): both movers write the same bytes and tell the same problem."""
    how, kind = CHANGES[change]
    results = []
    for mover_kind, name in ((_Mover, "fast"), (_General, "general")):
        root = tmp_path / f"src-{name}"  # both read as recorded under /recorded
        root.mkdir()
        rng = random.Random(5)
        files = []
        for i in range(6):
            (root / f"a{i}").write_bytes(rng.randbytes(rng.randint(1, 9000)))
            os.utime(root / f"a{i}", ns=(1, 1_700_000_000_000_000_000 + i))  # both trees'
            files.append(root / f"a{i}")
        hot = root / "a3"
        spec = SourceSpec("tree", "/recorded", "/recorded", str(root))
        mover = start(mover_kind, tmp_path / name, spec)
        src = mover.source(0)
        pending = {"hot": True}

        def first(call, path, *args, _how=how, _hot=hot, _pending=pending):
            if _pending["hot"] and path == b"/recorded/a3":
                _pending["hot"] = False
                _how(_hot)
            return call(path, *args)

        real_whole, real_open = src.read_whole, src.open
        src.read_whole = lambda path, *a, _f=first, _r=real_whole: _f(_r, path, *a)  # type: ignore[method-assign]
        src.open = lambda path, *a, _f=first, _r=real_open: _f(_r, path, *a)  # type: ignore[method-assign]
        for item in items_of(files, root, "/recorded"):
            mover.write_item(item)
        assert not pending["hot"], "the file was never opened"
        results.append(written(mover))
    fast, general = results
    assert fast[3] == general[3] == [(4, kind)]
    assert fast[1] == general[1]
    assert fast[0] == general[0]


@pytest.mark.parametrize("change", ["rewritten", "grown", "shrunk"])
def test_a_file_changed_during_the_fast_read_leaves_no_trace_of_it(
    tmp_path: Path, change: str, monkeypatch
) -> None:
    """The file changes while it is read (as the read returns: a concurrent writer):
    the fast path gives up having written nothing (gather buffer, fill, references,
    counts as they were), whatever was gathered before it stays as it was."""
    how, _kind = CHANGES[change]
    root = tmp_path / "src"
    root.mkdir()
    (root / "before").write_bytes(b"b" * 5000)
    hot = root / "hot"
    hot.write_bytes(os.urandom(70_000))
    spec = SourceSpec("tree", str(root), str(root))
    mover = start(_Mover, tmp_path / "dev", spec)
    first, item = items_of([root / "before", hot], root, str(root))
    mover.write_item(first)
    state = (bytes(mover.gather[: mover.fill]), mover.fill, list(mover.pending), mover.sent)
    assert state[1] > 5000
    real = os.preadv
    if change == "shrunk":  # before the read: it comes back short

        def preadv(fd, buffers, offset):
            how(hot)
            return real(fd, buffers, offset)
    else:  # after the read, before the check that follows it

        def preadv(fd, buffers, offset):
            got = real(fd, buffers, offset)
            how(hot)
            return got

    monkeypatch.setattr(os, "preadv", preadv)
    assert mover.small_file(item, True) is None
    monkeypatch.setattr(os, "preadv", real)
    got = (bytes(mover.gather[: mover.fill]), mover.fill, list(mover.pending), mover.sent)
    assert got == state
    assert mover.volume is not None and mover.volume.records == 1


def test_a_compressed_set_never_reads_into_the_gather_buffer(tmp_path: Path, monkeypatch):
    """Version-4 records are made by the codec from the source bytes: a small file of a
    compressed (or encrypted) set goes through ``record``, never ``small_in_place``."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "small").write_bytes(b"compress me " * 1000)
    spec = SourceSpec("tree", str(root), str(root))

    def refused(self, item, attrs):
        raise AssertionError("a compressed set's file read into the gather buffer")

    monkeypatch.setattr(_Mover, "small_in_place", refused)
    mover = start(_Mover, tmp_path / "dev", spec, CodecSpec(AUTO))
    (item,) = items_of([root / "small"], root, str(root))
    mover.write_item(item)
    assert mover.pending and mover.pending[0][-1] >= 0  # a stored (version 4) record
    assert mover.pending[0][3] > PLAIN_HEADER_FIXED + len(item[14])  # with its stored size
    # its extended attributes read by the same call, told with the file
    os.setxattr(root / "small", "user.review", b"kept")
    (item,) = items_of([root / "small"], root, str(root))
    mover.write_item(item)
    assert [(fid, bool(payload)) for fid, payload, _w in written(mover)[2]] == [(item[1], True)]


def test_a_short_read_is_never_taken_for_the_whole_file(tmp_path: Path, monkeypatch) -> None:
    """A read that returns fewer bytes than asked (a network or FUSE file system may) is
    no whole file: the fast path gives it to the general one, which reads the rest; the
    bytes left in the gather buffer by an earlier record never stand in for the tail."""
    root = tmp_path / "src"
    files = random_tree(root, random.Random(4))
    spec = SourceSpec("tree", str(root), str(root))
    items = items_of(files, root, str(root))
    real = os.preadv

    def short(fd, buffers, offset):  # at most half of what was asked, at least a byte
        view = memoryview(buffers[0]).cast("B")
        return real(fd, [view[: max(1, len(view) // 2)]], offset)

    monkeypatch.setattr(os, "preadv", short)
    results = []
    for kind, name in ((_Counted, "fast"), (_General, "general")):
        mover = start(kind, tmp_path / name, spec)
        for item in items:
            mover.write_item(item)
        results.append(written(mover))
        if isinstance(mover, _Counted):  # only one-byte files are read whole at once
            assert mover.in_place == sum(1 for i in items if i[4] == FILE and i[3] == 1)
    assert results[0] == results[1]


class Named(Source):
    """Files held in memory under names of any length (up to the format's limit): a
    source whose names leave the gather buffer too little spare room for a header."""

    def __init__(self, files: dict[bytes, bytes]) -> None:
        super().__init__(SourceSpec("named", "mem", "/"))
        self.files = files

    def scan(self, out, index, on_error) -> None:  # pragma: no cover - never scanned
        raise NotImplementedError

    def identity_of(self, path: bytes) -> Identity:
        return Identity(len(self.files[path]), 1, 2, 3, 4)

    def open(self, path, expect=None) -> FileReader:
        return _NamedReader(self.files[path], self.identity_of(path))

    def read_whole(self, path, expect, view, attrs):
        view[:] = self.files[path]
        return (b"", "") if expect == self.identity_of(path) else None


class _NamedReader(FileReader):
    def __init__(self, data: bytes, ident: Identity) -> None:
        self.data, self.ident = data, ident

    def readinto(self, offset: int, view: memoryview) -> int:
        got = self.data[offset : offset + len(view)]
        view[: len(got)] = got
        return len(got)

    def identity(self) -> Identity:
        return self.ident

    def xattrs(self) -> tuple[bytes, str]:
        return b"", ""

    def close(self) -> None:
        pass


def test_names_too_long_for_the_spare_room_have_what_was_gathered_written_first(
    tmp_path: Path,
) -> None:
    """A header larger than the room the gather buffer keeps past ``GATHER`` (names of
    16 KiB to the format's 64 KiB): what was gathered is written first, then the file
    read into the buffer's start; the same bytes as the general path."""
    rng = random.Random(9)
    files: dict[bytes, bytes] = {}

    def add(name_length: int, size: int) -> int:
        name = (b"/%d/" % len(files) + b"n" * name_length)[:MAX_NAME]
        files[name] = rng.randbytes(size)
        return PLAIN_HEADER_FIXED + len(name) + size

    fill = 0  # what the gather buffer holds, as the mover will have it
    for _round in range(6):  # gathered to just under GATHER, then a long-named file
        target = GATHER - rng.randint(1, 40_000)
        while fill < target - 200:
            fill += add(rng.choice([20, 100]), min(SMALL, target - fill - 140))
        fill = add(MAX_NAME, SMALL - rng.randint(0, 5000))  # written after a flush
        fill = add(rng.choice([10, 20_000, MAX_NAME]), rng.randint(1, SMALL)) + fill
    items = [
        (k, k, 0, len(d), FILE, len(d), 0o100644, 0, 0, 1, 2, 3, 4, 0, p, b"", None, b"")
        for k, (p, d) in enumerate(files.items(), 1)
    ]
    results, full = [], []
    for kind, name in ((_Counted, "fast"), (_General, "general")):
        mover = start(kind, tmp_path / name, SourceSpec("named", "mem", "/"))
        mover.sources[0] = Named(files)
        for item in items:
            mover.write_item(item)
        results.append(written(mover))
        full.append((getattr(mover, "full", None), getattr(mover, "in_place", None)))
    assert results[0] == results[1]
    assert full == [(6, len(items)), (None, None)]  # met each round, and each one fit


def test_files_written_to_while_the_mover_reads_them_keep_only_their_scanned_bytes(
    tmp_path: Path,
) -> None:
    """A real concurrent writer appends to small files, or rewrites them in place, while
    the mover reads them: whichever path takes each file, and whenever the writes land,
    every record of a file not reported changed holds its bytes as scanned (their
    checksum) and nothing else, and a file found grown is reported so."""
    root = tmp_path / "src"
    root.mkdir()
    spec = SourceSpec("tree", str(root), str(root))
    mover = start(_Counted, tmp_path / "dev", spec)
    rng = random.Random(12)
    stop = threading.Event()
    kept: dict[int, list] = {}
    for k in range(60):
        path = root / f"log{k}"
        original = rng.randbytes(rng.randint(1, SMALL))
        path.write_bytes(original)
        (item,) = items_of([path], root, str(root))
        item = (k + 1, k + 1, *item[2:])
        stop.clear()

        def write(_path=path, _other=bytes(255 - b for b in original), _append=k % 2) -> None:
            with open(_path, "r+b", buffering=0) as fh:
                while not stop.is_set():
                    if _append:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"appended line\n")
                    else:
                        os.pwrite(fh.fileno(), _other, 0)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            before = len(mover.pending)
            mover.write_item(item)
        finally:
            stop.set()
            writer.join()
        kept[k + 1] = [original, mover.pending[before:]]
    told = dict((m.file, m.kind) for m in mover.channel.msgs if isinstance(m, Problem))
    for fid, (original, records) in kept.items():
        if told.get(fid) == "changed":
            continue  # its records are dropped by the dispatcher
        assert sum(r[5] for r in records) == len(original)
        for _fid, _vol, _pos, _hsize, off, n, digest, _stored in records:
            assert digest == checksum(original[off : off + n]), (fid, told.get(fid))
    assert set(told.values()) <= {"grew", "changed"}
    assert all(told[f] == "grew" for f in told if f % 2 == 0)  # appended to: grown only
    assert mover.in_place + len(told) == len(kept)  # each file: read whole, or reported

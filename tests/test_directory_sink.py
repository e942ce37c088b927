"""The directory sink of a reader (readback/sinks.py), driven directly on a real directory.

Each file finished by the sink is written into its ``.part`` in its directory (opened
once below the target, no symlink followed), given its metadata and renamed into place
in that same directory. These tests hold the outcomes that must not change with how the
calls are made: data and metadata in place, a directory in the way refused and left
whole, a directory swapped for a symlink never written through, no descriptor leaked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.errors import RestoreError
from parbackup.model import RecordRef
from parbackup.readback.partfile import is_zero, part_name, write_sparse
from parbackup.readback.paths import DirMaker
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.sinks import DirectorySink, DirectorySinkSpec

MTIME = 1_600_000_000_123_456_789


def ref(offset: int, size: int) -> RecordRef:
    return RecordRef("dev", "v0", 0, 1, offset, size, b"")


def sink_for(root: Path, files: dict[int, str]) -> DirectorySink:
    """A sink finishing ``files`` (id -> path below root), 0o640, MTIME, our own owner."""
    targets = {
        fid: (str(root / rel), 8, 0o640, os.geteuid(), os.getegid(), MTIME, True)
        for fid, rel in files.items()
    }
    return DirectorySink(DirectorySinkSpec(targets, str(root)))


def open_fds(under) -> int:
    """Descriptors of this process open on something below ``under``: other tests'
    descriptors in the same (xdist) process come and go meanwhile, so not a count of
    all of them."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            if os.readlink(f"/proc/self/fd/{fd}").startswith(f"{under}/"):
                count += 1
    return count


@pytest.mark.parametrize("keep", [3, 8192])
def test_files_land_with_their_data_and_metadata_and_no_part(tmp_path, keep):
    """Files and directories beyond what stays open (64 files; ``keep`` idle directories)
    are closed and opened again as they come back."""
    root = tmp_path / "target"
    names = {fid: f"d{fid % 70}/f{fid}" for fid in range(200)}  # more than stay open
    for rel in names.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    before = open_fds(tmp_path)
    sink = sink_for(root, names)
    sink.keep = keep
    for fid in names:  # every file's first half, then every second half: evictions
        assert sink.put(fid, ref(0, 4), memoryview(b"%04d" % fid)) == ""
    for fid in names:
        assert sink.put(fid, ref(4, 4), memoryview(b"abcd")) == ""
        assert sink.complete(fid) == ""
    assert sink.finish() == ""
    assert open_fds(tmp_path) == before
    for fid, rel in names.items():
        st = (root / rel).lstat()
        assert (root / rel).read_bytes() == b"%04dabcd" % fid
        assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, MTIME)
    assert not list(root.rglob(".parbackup-*.part"))


def deliver(sink: DirectorySink, fid: int, records: list[tuple[int, bytes]]) -> str:
    """Hand a file's records to the sink as a reader does (readback/reader.py
    ``_Results``): ``fail`` after an error, else ``complete``; '' or the error."""
    for offset, data in records:
        error = sink.put(fid, ref(offset, len(data)), memoryview(data))
        if error:
            sink.fail(fid)
            return error
    return sink.complete(fid)


@pytest.mark.parametrize(
    "records",
    [[(0, b"12345678")], [(0, b"1234"), (4, b"5678")]],
    ids=["one-record", "two-records"],
)
def test_a_directory_in_the_way_is_refused_and_left_whole(tmp_path, records):
    """A file in one record is finished in its ``put``, one in several at ``complete``:
    either way the directory in the way is named and left as it was."""
    root = tmp_path / "target"
    (root / "empty").mkdir(parents=True)
    (root / "full").mkdir()
    (root / "full" / "keep").write_bytes(b"keep")
    sink = sink_for(root, {1: "empty", 2: "full"})
    for fid in (1, 2):
        assert deliver(sink, fid, records) == "a directory is in the way"
    assert (root / "empty").is_dir() and not any((root / "empty").iterdir())
    assert (root / "full" / "keep").read_bytes() == b"keep"
    assert not list(root.rglob(".parbackup-*.part"))


def test_a_directory_swapped_for_a_symlink_is_never_written_through(tmp_path):
    root = tmp_path / "target"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(root / "a", tmp_path / "moved")
    os.symlink(outside, root / "a")  # swapped before the sink reaches the file
    sink = sink_for(root, {1: "a/f"})
    error = sink.put(1, ref(0, 8), memoryview(b"12345678"))
    assert error.startswith(str(root / "a" / "f") + ":"), error
    sink.fail(1)
    assert sink.finish() == ""
    assert list(outside.iterdir()) == []
    assert not os.path.lexists(part_name(str(tmp_path / "moved" / "f"), 1))


def test_directories_are_made_and_nothing_else_is_passed_through(tmp_path):
    """DirMaker (readback/paths.py), which makes the directories before the readers
    start: new ones made, existing ones kept, a symlink or a file in the way refused."""
    root = tmp_path / "target"
    (root / "old").mkdir(parents=True)
    (root / "file").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    dirs = DirMaker(str(root))
    dirs.ensure(str(root / "old" / "new" / "deeper"))
    assert (root / "old" / "new" / "deeper").is_dir()
    with pytest.raises(RestoreError, match="through the symlink"):
        dirs.ensure(str(root / "link" / "sub"))
    with pytest.raises(RestoreError, match="not a directory"):
        dirs.ensure(str(root / "file" / "sub"))
    assert list(outside.iterdir()) == []
    dirs.close()


def test_directories_made_through_held_parents_leak_nothing_and_pass_no_symlink(tmp_path):
    """DirMaker keeps the last directories it opened for the next ones: more directories
    than it keeps are all made; one swapped for a symlink after it was made sends
    nothing through the symlink; ``close`` leaves no descriptor open."""
    root = tmp_path / "target"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    before = open_fds(tmp_path)
    dirs = DirMaker(str(root))
    made = [root / f"d{i % 90}" / f"e{i}" / "f" for i in range(300)]  # more than kept
    for d in made:
        dirs.ensure(str(d))
    assert all(d.is_dir() for d in made)
    (root / "d0").rename(root / "d0.moved")
    os.symlink(outside, root / "d0")
    dirs.ensure(str(root / "d0" / "new"))  # d0's held descriptor: the moved directory
    assert list(outside.iterdir()) == []
    assert (root / "d0.moved" / "new").is_dir()
    dirs.close()
    assert open_fds(tmp_path) == before


def test_a_directory_in_the_way_of_a_file_the_restore_finishes_itself(tmp_path, device_dirs):
    """The restoring process itself finishes empty files and files split over devices
    (readback/restore.py): a directory at such a file's place is refused the same way."""
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "big").write_bytes(os.urandom(3 << 20))  # split over both devices
    (tree / "empty").write_bytes(b"")
    (tree / "small").write_bytes(b"small")
    cat = str(tmp_path / "cat.sqlite")
    with Catalog(cat) as catalog:
        report = run_backup([str(tree)], [str(d) for d in device_dirs(2)], catalog)
        assert report.status == "complete"
        assert all(d.bytes > 1 << 20 for d in report.devices) and len(report.devices) == 2
    target = tmp_path / "target"
    out = target / str(tree).lstrip("/")
    for name in ("big", "empty"):
        (out / name).mkdir(parents=True)
        (out / name / "keep").write_bytes(b"keep")
    with Catalog(cat) as catalog:
        got = run_restore(catalog, RestoreOptions(target=str(target), overwrite=True))
    damaged = {Path(d["path"]).name: d["error"] for d in got.damaged}
    assert damaged == {"big": "a directory is in the way", "empty": "a directory is in the way"}
    for name in ("big", "empty"):
        assert (out / name / "keep").read_bytes() == b"keep"
    assert (out / "small").read_bytes() == b"small"
    assert not list(target.rglob(".parbackup-*.part"))


def test_no_descriptor_is_left_open_when_a_part_cannot_be_made(tmp_path):
    root = tmp_path / "target"
    (root / "a" / ".parbackup-1.part").mkdir(parents=True)  # in the way of the .part
    before = open_fds(tmp_path)
    sink = sink_for(root, {1: "a/f"})
    assert sink.put(1, ref(0, 8), memoryview(b"12345678")) != ""
    assert sink.finish() == ""
    assert open_fds(tmp_path) == before
    assert (root / "a" / ".parbackup-1.part").is_dir()


def test_a_directory_swapped_after_an_earlier_file_of_it_is_still_never_written_through(
    tmp_path,
):
    """The sink keeps a directory open for the next files of it: one swapped for a
    symlink after the first file was finished sends nothing through the symlink."""
    root = tmp_path / "target"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    sink = sink_for(root, {1: "a/f1", 2: "a/f2"})
    assert sink.put(1, ref(0, 8), memoryview(b"12345678")) == ""
    assert sink.complete(1) == ""
    os.rename(root / "a", tmp_path / "moved")
    os.symlink(outside, root / "a")
    sink.put(2, ref(0, 8), memoryview(b"abcdefgh"))
    sink.complete(2)
    assert sink.finish() == ""
    assert list(outside.iterdir()) == []
    assert (tmp_path / "moved" / "f1").read_bytes() == b"12345678"


def test_a_reader_makes_missing_directories_and_passes_no_symlink(tmp_path):
    """Readers start before the restore has made the directories: a sink makes a file's
    missing directories beneath the root (0o700 until the restore gives them their
    metadata), and a symlink on the way is refused, nothing made behind it."""
    root = tmp_path / "target"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    before = open_fds(tmp_path)
    sink = sink_for(root, {1: "new/deeper/f", 2: "link/sub/f"})
    assert sink.put(1, ref(0, 8), memoryview(b"12345678")) == ""
    assert sink.complete(1) == ""
    error = sink.put(2, ref(0, 8), memoryview(b"abcdefgh"))
    assert error.startswith(str(root / "link" / "sub" / "f") + ":"), error
    sink.fail(2)
    assert sink.finish() == ""
    assert open_fds(tmp_path) == before
    assert (root / "new" / "deeper" / "f").read_bytes() == b"12345678"
    assert (root / "new" / "deeper").stat().st_mode & 0o777 == 0o700
    assert list(outside.iterdir()) == []


def test_a_split_file_part_made_by_a_reader_is_never_truncated(tmp_path):
    """A file split over devices: whichever of its readers (or the restore) comes first
    makes its ``.part``; the others write into it without truncating what is there."""
    root = tmp_path / "target"
    root.mkdir()
    spec = {1: (str(root / "f"), 8, 0o640, os.geteuid(), os.getegid(), MTIME, False)}
    first = DirectorySink(DirectorySinkSpec(spec, str(root)))
    second = DirectorySink(DirectorySinkSpec(spec, str(root)))
    assert first.put(1, ref(4, 4), memoryview(b"5678")) == ""
    assert second.put(1, ref(0, 4), memoryview(b"1234")) == ""
    for sink in (first, second):
        assert sink.complete(1) == ""
        assert sink.finish() == ""
    assert Path(part_name(str(root / "f"), 1)).read_bytes() == b"12345678"


def test_an_old_part_of_a_split_file_leaks_nothing_into_its_holes(tmp_path, device_dirs):
    """Readers write into a split file's ``.part`` without truncating it, so the restore
    removes any ``.part`` left there before they start: zeros kept as holes stay
    zeros, whatever an older ``.part`` held."""
    tree = tmp_path / "src"
    tree.mkdir()
    data = bytearray(os.urandom(3 << 20))
    data[1 << 20 : 2 << 20] = bytes(1 << 20)  # a hole in the middle
    (tree / "big").write_bytes(bytes(data))
    cat = str(tmp_path / "cat.sqlite")
    with Catalog(cat) as catalog:
        report = run_backup([str(tree)], [str(d) for d in device_dirs(2)], catalog)
        assert all(d.bytes > 1 << 20 for d in report.devices) and len(report.devices) == 2
        set_id = catalog.resolve_set(None).id
        fid = next(f.file_id for f in catalog.files(set_id) if f.entry.path.endswith("/big"))
    target = tmp_path / "target"
    out = target / str(tree).lstrip("/")
    out.mkdir(parents=True)
    Path(part_name(str(out / "big"), fid)).write_bytes(b"\xff" * len(data))
    with Catalog(cat) as catalog:
        got = run_restore(catalog, RestoreOptions(target=str(target), overwrite=True))
    assert got.damaged == []
    assert (out / "big").read_bytes() == bytes(data)
    assert not list(target.rglob(".parbackup-*.part"))


def test_sparse_writes_keep_every_byte_that_is_not_zero(tmp_path):
    """Blocks are told zero or not by their first byte first: a block starting with a
    zero byte is still compared whole and written, an all-zero one left as a hole."""
    data = bytearray(os.urandom(6 * 4096 + 100))
    data[0] = 0  # not all zero: written
    data[4096:8192] = bytes(4096)  # a hole
    data[3 * 4096 : 3 * 4096 + 4000] = bytes(4000)  # zeros but for its last 96 bytes
    data[-100:] = bytes(100)  # ends in zeros: not written, the caller sizes the file
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        end = write_sparse(fd, memoryview(bytes(data)), 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    assert end == 6 * 4096
    assert path.read_bytes() == bytes(data)
    assert not is_zero(memoryview(bytes(data))) and is_zero(memoryview(bytes(5000)))


def test_files_in_one_record_land_whole_with_their_metadata(tmp_path):
    """A file whose one record is all of it is finished in that record's ``put``
    (no ``complete`` work left): data (zeros at the end and all zeros included, left as
    holes), mode and time in place, no ``.part``, no descriptor left open."""
    root = tmp_path / "target"
    block = 4096
    data = {
        1: b"small",
        2: b"x" * block + bytes(2 * block),  # zeros at the end: a hole, then sized
        3: bytes(3 * block),  # all zeros: never written, only sized
    }
    (root / "d").mkdir(parents=True)
    targets = {
        fid: (str(root / "d" / f"f{fid}"), len(b), 0o640, os.geteuid(), os.getegid(), MTIME, True)
        for fid, b in data.items()
    }
    before = open_fds(tmp_path)
    sink = DirectorySink(DirectorySinkSpec(targets, str(root)))
    for fid, b in data.items():
        assert sink.put(fid, ref(0, len(b)), memoryview(b)) == ""
        assert (root / "d" / f"f{fid}").read_bytes() == b  # in place before complete()
        assert sink.complete(fid) == ""
    assert sink.finish() == ""
    assert open_fds(tmp_path) == before
    for fid, b in data.items():
        st = (root / "d" / f"f{fid}").lstat()
        assert (st.st_size, st.st_mode & 0o7777, st.st_mtime_ns) == (len(b), 0o640, MTIME)
    assert (root / "d" / "f3").lstat().st_blocks == 0
    assert not list(root.rglob(".parbackup-*.part"))


def test_every_directory_gets_its_metadata_through_held_parents(tmp_path, device_dirs):
    """Directory metadata is given deepest first, each directory opened relative to its
    parent (kept open for its siblings, up to 64): more parents than that, modes that
    shut out others, and times all come back, and no descriptor stays open."""
    tree = tmp_path / "src"
    modes = [0o755, 0o750, 0o700, 0o555]
    dirs = [tree / f"p{i}" / f"c{j}" for i in range(80) for j in range(2)]
    for n, d in enumerate(dirs):
        d.mkdir(parents=True)
        (d / "f").write_bytes(b"%d" % n)
    for n, d in enumerate(dirs + sorted({d.parent for d in dirs})):
        os.chmod(d, modes[n % len(modes)])
        os.utime(d, ns=(MTIME + n, MTIME + n))
    cat = str(tmp_path / "cat.sqlite")
    with Catalog(cat) as catalog:
        assert run_backup([str(tree)], [str(d) for d in device_dirs(2)], catalog).status == (
            "complete"
        )
    with Catalog(cat) as catalog:  # the first starts what stays (the readers' server)
        assert run_restore(catalog, RestoreOptions(target=str(tmp_path / "t0"))).damaged == []
    target = tmp_path / "target"
    before = open_fds(tmp_path)
    with Catalog(cat) as catalog:
        got = run_restore(catalog, RestoreOptions(target=str(target)))
    assert got.damaged == [] and open_fds(tmp_path) == before
    out = target / str(tree).lstrip("/")
    for d in dirs + sorted({d.parent for d in dirs}):
        want, have = d.lstat(), (out / d.relative_to(tree)).lstat()
        assert (have.st_mode, have.st_mtime_ns) == (want.st_mode, want.st_mtime_ns), d

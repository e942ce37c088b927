"""The small-file fast path of a local tree (``LocalTree.read_whole``, issue 10): open,
read, check, attributes and close in one call. It gives what ``open`` and its reader
give for an unchanged file, and None (the mover then takes the reader, which says what
is wrong) for every file that is not the one the scan saw: changed, grown, shrunk,
replaced, a symlink or a FIFO now. A FIFO is never read (a read would take another
program's data).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parbackup.engine.prepare import source_specs
from parbackup.sources.base import Identity
from parbackup.sources.registry import open_source


def _identity(path: Path) -> Identity:
    st = os.stat(path, follow_symlinks=False)
    return Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@pytest.fixture
def tree(tmp_path: Path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a").write_bytes(b"hello, world")
    source = open_source(source_specs([str(root)])[0])
    yield root, source
    source.close()


def test_an_unchanged_file_reads_as_its_reader_reads_it(tree):
    root, source = tree
    f = root / "a"
    os.setxattr(f, "user.colour", b"blue")
    expect = _identity(f)
    view = memoryview(bytearray(expect.size))
    got = source.read_whole(os.fsencode(f), expect, view, True)
    with source.open(os.fsencode(f), expect) as reader:
        want = bytearray(expect.size)
        assert reader.readinto(0, memoryview(want)) == expect.size
        assert reader.identity() == expect
        attrs = reader.xattrs()
    assert bytes(view) == bytes(want) == b"hello, world"
    assert got == attrs and got[0]  # the attributes' payload, as the reader gives it
    # not asked (the item brought them): none read
    assert source.read_whole(os.fsencode(f), expect, view, False) == (b"", "")


def _changed(f: Path) -> None:
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _grown(f: Path) -> None:
    with open(f, "ab") as fh:
        fh.write(b"!")


def _replaced(f: Path) -> None:
    other = f.with_name("other")
    other.write_bytes(f.read_bytes())
    os.utime(other, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns))
    other.replace(f)


def _symlink(f: Path) -> None:
    f.unlink()
    f.symlink_to("/etc/hostname")


def _fifo(f: Path) -> None:
    f.unlink()
    os.mkfifo(f)


def _gone(f: Path) -> None:
    f.unlink()


@pytest.mark.parametrize(
    "change", [_changed, _grown, _replaced, _symlink, _fifo, _gone], ids=lambda c: c.__name__
)
def test_a_file_not_as_scanned_is_left_to_the_reader(tree, change):
    root, source = tree
    f = root / "a"
    expect = _identity(f)
    change(f)
    view = memoryview(bytearray(expect.size))
    assert source.read_whole(os.fsencode(f), expect, view, True) is None


def test_a_shorter_file_than_the_view_is_left_to_the_reader(tree):
    """Shrunk under the scan's size (and truncated with its times kept): not whole."""
    root, source = tree
    f = root / "a"
    expect = _identity(f)
    view = memoryview(bytearray(expect.size + 1))
    assert source.read_whole(os.fsencode(f), expect, view, True) is None


def test_a_fifo_is_not_read(tree):
    """A FIFO where the file was, with a writer holding data in it: the fast path gives
    up before reading, so the data stays in the pipe for its reader."""
    root, source = tree
    f = root / "a"
    expect = _identity(f)
    _fifo(f)
    keep = os.open(f, os.O_RDONLY | os.O_NONBLOCK)  # so the writer's open does not wait
    writer = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"someone else's")
        view = memoryview(bytearray(expect.size))
        assert source.read_whole(os.fsencode(f), expect, view, True) is None
        assert os.read(keep, 100) == b"someone else's"
    finally:
        os.close(writer)
        os.close(keep)

"""Writes that are whole or fail (parbackup/fileio.py), with real short writes.

``os.write`` may take less than it is given. A pipe shows it for certain: non-blocking
with one page of room, or blocking and interrupted by a signal once it is full. A nearly
full tmpfs does the same to a key file: ``KeyFile.save`` used to write once, fsync and
rename the cut file over the good one, and the backup's key was lost without a word.
"""

from __future__ import annotations

import array
import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
from pathlib import Path

import pytest

from conftest import SRC
from fsfixtures import fill_up, tmpfs_fixture  # noqa: F401 (fixture)
from parbackup.crypto.keys import KeyFile
from parbackup.errors import ParbackupError
from parbackup.fileio import write_all, write_synced

PAGE = 4096
PASSPHRASE = b"correct horse battery"


def pipe_capacity(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def queued(fd: int) -> int:
    """Bytes waiting in the pipe whose read end is ``fd``."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_a_short_write_is_never_taken_for_a_whole_one() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        full = pipe_capacity(w)
        os.write(w, bytes(full))
        os.read(r, PAGE)  # one page of room
        assert os.write(w, b"x" * (2 * PAGE)) == PAGE  # the real short write
        os.read(r, PAGE)
        with pytest.raises(OSError):  # no more room: EAGAIN, not "done"
            write_all(w, b"y" * (2 * PAGE))
        assert queued(r) == full
    finally:
        os.close(r)
        os.close(w)


def test_a_short_write_is_continued() -> None:
    """A blocking write into a pipe that filled up returns short when a signal comes;
    write_all writes the rest, so the reader gets every byte."""
    r, w = os.pipe()
    full = pipe_capacity(w)
    data = os.urandom(full + 3 * PAGE)
    writer = threading.main_thread().ident
    assert writer is not None and threading.get_ident() == writer
    got = bytearray()

    def reader() -> None:
        while queued(r) < full:  # the write filled the pipe and waits for room
            pass
        signal.pthread_kill(writer, signal.SIGUSR1)  # now it returns short
        while chunk := os.read(r, 1 << 16):
            got.extend(chunk)

    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    thread = threading.Thread(target=reader)
    try:
        thread.start()
        write_all(w, data)
        os.close(w)
        thread.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
        os.close(r)
    assert bytes(got) == data


def test_write_synced_replaces_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"old")
    write_synced(path, b"new contents", mode=0o640)
    assert path.read_bytes() == b"new contents"
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["small"]


def test_a_key_file_saved_onto_a_full_disk_leaves_the_old_one_whole(tmpfs) -> None:
    disk = tmpfs("keys", "1m")
    path = disk / "cat.sqlite.key"
    old, master = KeyFile.create(PASSPHRASE)
    old.save(path)
    good = path.read_bytes()
    # many passphrase slots (its own, renumbered): a key file over two pages long
    more = KeyFile(old.key_id, [dataclasses.replace(old.slots[0], slot=n) for n in range(1, 40)])
    assert len(more.to_json()) > 2 * PAGE
    fill_up(disk)
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size // PAGE * PAGE - PAGE)  # one page left
    with pytest.raises(ParbackupError, match=r"cat\.sqlite\.key: .*No space left on device"):
        more.save(path)
    assert path.read_bytes() == good
    loaded = KeyFile.load(path)
    assert loaded is not None and loaded.unlock(PASSPHRASE)[0] == master
    assert sorted(os.listdir(disk)) == ["cat.sqlite.key", "filler"]  # no temporary file


KILLED_AT_FSYNC = """
import os, signal, sys
from parbackup.fileio import write_synced
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the kill point: written, not renamed
write_synced(sys.argv[1], b"never renamed")
"""


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    """A key file's writer killed between its write and its rename leaves
    ``NAME.tmp-PID-TID``, a name nobody writes again: the next write of that file
    removes it (a live writer's is kept). Before, such files stayed for ever, each with a
    copy of the key file's slots."""
    path = tmp_path / "cat.sqlite.key"
    old, _master = KeyFile.create(PASSPHRASE)
    old.save(path)
    env = {**os.environ, "PYTHONPATH": SRC}
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_FSYNC, str(path)], env=env)
    assert killed.returncode == -signal.SIGKILL
    (left,) = [p for p in os.listdir(tmp_path) if p != path.name]
    assert left.startswith(f"{path.name}.tmp-")
    live = tmp_path / f"{path.name}.tmp-{os.getpid()}-1"  # a writer still running here
    live.write_bytes(b"")
    old.save(path)
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, live.name])
    assert KeyFile.load(path) is not None


SAVED_IN_A_FOLDER_IT_CANNOT_READ = """
import sys
from pathlib import Path
from parbackup.cli.report import write_page
from parbackup.crypto.keys import KeyFile
from parbackup.errors import ParbackupError
folder = Path(sys.argv[1])
new, _master = KeyFile.create(b"new passphrase")
print(new.key_id.hex())
page = str(folder / "page.html")
for write in (lambda: new.save(folder / "cat.sqlite.key"), lambda: write_page(page, "page")):
    try:
        write()
    except ParbackupError as exc:
        print(exc, file=sys.stderr)
"""


def test_a_key_file_whose_folder_cannot_be_synced_is_said_to_be_in_place(tmp_path: Path) -> None:
    """The folder's sync comes after the rename: when it fails, the new key file (or
    report page) is in place and the message says so. Real: a folder its owner may write
    and enter but not read, so ``open(O_RDONLY)`` of it (for its fsync) is refused, as
    root it would not be. Before, the message said the old key file was unchanged."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to write as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="pb-nobody-"))
    try:
        path = folder / "cat.sqlite.key"
        old, _master = KeyFile.create(PASSPHRASE)
        old.save(path)
        for p in (folder, path):
            os.chown(p, 65534, 65534)
        folder.chmod(0o300)  # write and search, no read
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        child = subprocess.run(
            [*cmd, sys.executable, "-c", SAVED_IN_A_FOLDER_IT_CANNOT_READ, str(folder)],
            env={**os.environ, "PYTHONPATH": SRC},
            capture_output=True,
            text=True,
        )
        assert child.returncode == 0, child.stderr
        key_said, page_said = child.stderr.splitlines()
        assert "the new key file is in place" in key_said, key_said
        assert "may not survive a power cut" in key_said and "unchanged" not in key_said
        assert "the report" in page_said and "is written" in page_said, page_said
        loaded = KeyFile.load(path)
        assert loaded is not None and loaded.key_id.hex() == child.stdout.strip()
        assert (folder / "page.html").read_text() == "page"
    finally:
        shutil.rmtree(folder)

"""An incremental never takes a file changed after it was read for unchanged because its
file system's clock did not tick in between ("racily clean", as git calls it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import SRC, run_cli
from fsfixtures import Gate, ext4_fixture  # noqa: F401 (fixture)


def test_a_file_changed_in_the_same_second_as_it_was_read_is_copied_again(tmp_path, ext4):
    """On ext4 with 128-byte inodes times are whole seconds. A file read by a backup and
    then changed to other bytes of the same size within that second keeps its size,
    mtime, ctime and inode: the next incremental reused the bytes read before the
    change, for ever (exit 0, verify ok), and restore gave back the old content. The
    file is written by the backup's pre-command, the change made while the backup is
    paused just after it read the file; the run is made again until the change left
    every time as it was (the precondition, checked with stat, not with a clock)."""
    src = ext4("src", 16, inode_size=128)
    f = src / "f"
    f.write_bytes(b"")
    for attempt in range(60):
        work = tmp_path / f"run{attempt}"
        (work / "d0").mkdir(parents=True)
        cat = str(work / "cat.sqlite")
        gate = Gate(work / "gate")
        dev = f"faulty+file://{work / 'd0'}?pause_after=1&gate={gate}"
        write = f"head -c 5000 /dev/zero | tr '\\0' A > {f}"  # just before the scan
        cmd = ["backup", str(src), "-d", dev, "--catalog", cat, "--pre-command", write]
        proc = subprocess.Popen(
            [sys.executable, "-m", "parbackup", *cmd],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            gate.wait_paused(proc)  # the mover has read f and is writing its record
            before = os.stat(f)
            with open(f, "r+b") as fh:
                fh.write(b"B" * 5000)
            after = os.stat(f)
            gate.open()
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        stamps = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")
        if all(getattr(before, s) == getattr(after, s) for s in stamps):
            break
    else:
        raise AssertionError("no change ever fell in the second of the read")
    r = run_cli("backup", str(src), "-d", str(work / "d0"), "--incremental", "--json",
                "--catalog", cat)  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["reused"] == 0
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert (out / str(f).lstrip("/")).read_bytes() == b"B" * 5000

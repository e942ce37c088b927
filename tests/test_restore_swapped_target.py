"""A directory inside the restore target swapped for a symlink while restore runs (issue 11).

Restore checks every directory on the way with ``lstat``, but a check and a later open
by path leave a window: whoever may write in the target (a user whose home a root restore
fills) swaps a directory for a symlink to elsewhere between the two, and the restore
writes there. Real parts: restore stopped at a known point of its reading (the
``faulty+`` wrapper's ``pause_read``, announced through a FIFO), the swap made for real,
the restore goes on. Outside lies a file named like a FIFO of the set, which restore
makes (after unlinking what is in its way) once the data is in place.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import SRC, restored_root, run_cli
from failcases import wait_for
from killpoints import pause_point, wait_paused
from parbackup import xattrs
from parbackup.catalog import CatalogFile
from parbackup.model import FileEntry, Kind
from parbackup.readback.beneath import Beneath
from parbackup.readback.fidelity import restore_extended

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("where", ["leaf", "middle"])
def test_restore_never_writes_through_a_directory_swapped_for_a_symlink(tmp_path, where):
    tree = tmp_path / "src"
    (tree / "top" / "a").mkdir(parents=True)
    for i in range(12):
        (tree / "top" / "a" / f"f{i}").write_bytes(os.urandom(300_000))
    os.mkfifo(tree / "top" / "a" / "victim")  # made after the data: unlinks what is there
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), *[a for d in devs for a in ("-d", str(d))], "--catalog", cat)
    assert r.code == 0, r.out + r.err
    outside = tmp_path / "outside"
    (outside / "a").mkdir(parents=True)
    (outside / "a" / "victim").write_bytes(b"precious")  # what the swap points the FIFO at
    target = tmp_path / "target"
    gates = [tmp_path / "gate0", tmp_path / "gate1"]  # each reader stops before it reads
    fifos = [pause_point(g) for g in gates]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "restore", "--target", str(target),
         "--catalog", cat, "--json",
         "-d", f"faulty+file://{devs[0]}?pause_read=0&gate={gates[0]}",
         "-d", f"faulty+file://{devs[1]}?pause_read=0&gate={gates[1]}"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for fifo in fifos:
            assert wait_paused(proc, fifo), "restore ended before it read"
        root = restored_root(target, tree)
        swapped = root / "top" / "a" if where == "leaf" else root / "top"
        wait_for(swapped)  # made here while the readers read (they start first): may come late
        assert swapped.is_dir()
        swapped.rename(swapped.with_name(swapped.name + ".moved"))
        os.symlink(outside if where == "middle" else outside / "a", swapped)
    finally:
        for gate in gates:
            gate.touch()
        out, err = proc.communicate(timeout=120)
    victim = outside / "a" / "victim"
    assert [p.name for p in outside.rglob("*") if not p.is_dir()] == ["victim"], (
        out + err
    ).decode()
    assert stat.S_ISREG(victim.lstat().st_mode), "the FIFO was made outside the target"
    assert victim.read_bytes() == b"precious"
    assert proc.returncode in (1, 3), (out + err).decode()


def test_extended_attributes_never_go_through_a_directory_swapped_for_a_symlink(tmp_path):
    """The attributes come last (readback/fidelity.py), by name: a directory of the
    target swapped for a symlink to elsewhere by then must not lead them out of the
    target. The entry is named as left out; the file outside keeps none."""
    target = tmp_path / "target"
    (target / "top" / "a").mkdir(parents=True)
    inside = target / "top" / "a" / "f"
    inside.write_bytes(b"restored\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"not ours\n")
    entry = FileEntry(path="/top/a/f", kind=Kind.FILE, size=9, mode=0o644, mtime_ns=1,
                      uid=os.geteuid(), gid=os.getegid(),
                      meta=xattrs.encode({b"user.tag": b"ours"}))  # fmt: skip
    chosen = [CatalogFile(1, entry, "whole")]
    dest = {1: str(inside)}
    got = restore_extended(chosen, dest, {"/top/a/f"}, set(), Beneath(str(target)))
    assert got == [] and os.getxattr(inside, "user.tag") == b"ours"  # the way it works
    os.removexattr(inside, "user.tag")
    os.rename(target / "top" / "a", tmp_path / "moved")
    os.symlink(outside, target / "top" / "a")  # the swap
    got = restore_extended(chosen, dest, {"/top/a/f"}, set(), Beneath(str(target)))
    assert [d["path"] for d in got] == ["/top/a/f"], got
    assert os.listxattr(outside / "f") == []

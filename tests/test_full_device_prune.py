"""A device that fills up while prune compacts a volume on it (issue 11).

Real parts: the device is a directory on a 16 MiB tmpfs; prune is stopped at its first
compaction write (the ``faulty+`` wrapper's ``pause_after=0``, announced through a FIFO),
another process fills the tmpfs to the last byte, and prune goes on into ENOSPC.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SRC, run_cli, snapshot
from fsfixtures import fill_up, tmpfs_fixture  # noqa: F401 (fixture)
from killpoints import device_garbage, pause_point, volumes_on, wait_paused
from test_forget import change_files, make_week_tree, nightly_backup, restores_exactly

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_device_full_during_compaction_keeps_the_old_volume(tmp_path, tmpfs):
    tree = make_week_tree(tmp_path / "src")
    small = tmpfs("small", "16m")
    disk = tmp_path / "disk"
    disk.mkdir()
    devs = [small, disk]
    cat = str(tmp_path / "cat.sqlite")
    nightly_backup(tree, devs, cat, 0)
    for night in (1, 2):
        change_files(tree, night)
    kept = nightly_backup(tree, devs, cat, 3)
    want = snapshot(tree)
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    before = volumes_on([small])

    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "prune", "--catalog", cat, "--json",
         "-d", f"faulty+file://{small}?pause_after=0&gate={gate}"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert wait_paused(proc, fifo), "prune compacted nothing on the small device"
    fill_up(small)  # another process takes every free byte
    gate.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out.decode() + err.decode()
    assert "No space left on device" in out.decode(), out.decode()
    # the half-written copy does not stay to hold the space; the old volume is whole
    left = volumes_on([small])
    assert set(left) <= set(before), sorted(set(left) - set(before))
    restores_exactly(tmp_path, cat, kept, tree, want)
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err

    (small / "filler").unlink()  # space again: the next prune finishes the job
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert device_garbage(devs, cat) == {}
    restores_exactly(tmp_path, cat, kept, tree, want)

"""A btrfs snapshot left behind by a killed backup is found and deleted by the next run.

A run killed with SIGKILL cannot delete the read-only snapshot it took of the source's
subvolume; it used to stay for ever, pinning the old blocks. The backup is killed for
real (the ``faulty+`` device only stops it at a known byte, announced through a FIFO),
while its snapshot exists; the next ``--snapshot btrfs`` run on that subvolume deletes
it (a snapshot of a run still alive is left alone) and completes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SRC, make_tree, run_cli
from fsfixtures import btrfs_missing, subvolume_fixture  # noqa: F401 (fixture)
from killpoints import pause_point, wait_paused
from test_snapshot import leftover_snapshots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(bool(btrfs_missing()), reason=btrfs_missing()),
]


def test_a_killed_runs_snapshot_is_deleted_by_the_next_run(tmp_path, subvolume):
    vol = subvolume
    make_tree(vol / "data", seed=51, files=10, big=(3_000_000,))
    dev = tmp_path / "dev"
    dev.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    faulty = f"faulty+file://{dev}?pause_after=1M&gate={gate}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parbackup",
            "backup",
            str(vol),
            "-d",
            faulty,
            "--snapshot",
            "btrfs",
            "--catalog",
            cat,
        ],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_paused(proc, fifo)
    proc.kill()
    proc.wait()
    assert len(leftover_snapshots(vol)) == 1  # what the killed run left

    # a snapshot of a run still alive (this test's own process) is not touched
    alive = vol / f".parbackup-snapshot-{os.getpid()}-000000000000"
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(vol), str(alive)],
        check=True,
        capture_output=True,
    )
    try:
        r = run_cli("backup", str(vol), "-d", str(dev), "--snapshot", "btrfs", "--catalog", cat)
        assert r.code == 0, r.out + r.err
        assert "deleted the snapshot a killed run left" in r.err
        assert [str(alive.name) in line for line in leftover_snapshots(vol)] == [True]
    finally:
        subprocess.run(["btrfs", "subvolume", "delete", str(alive)], capture_output=True)
    assert leftover_snapshots(vol) == []
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err

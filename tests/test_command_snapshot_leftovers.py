"""What a ``--pre-command`` made, when the run that made it is killed (issue 11).

parbackup cannot know what a user's pre command made (an LVM or ZFS snapshot, a mount),
but it knows how the user releases it: the ``--post-command``. The run records that
command in the catalog before the pre command runs; a run killed with SIGKILL never
runs it, so the next backup on that catalog does (``PARBACKUP_STATUS=interrupted``),
before its own pre command, and says so. And the pre and post commands run only under
the catalog's run lock, so a second backup refused by the lock never releases the
snapshot the first one is reading.

Real parts: a btrfs subvolume on a loop image, snapshotted and deleted by the user's
commands; the backup killed for real while the snapshot exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from fsfixtures import btrfs_missing, subvolume_fixture  # noqa: F401 (fixture)
from killpoints import pause_point, wait_paused

pytestmark = pytest.mark.slow


def start_backup(tree: Path, dev: str, cat: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", str(tree), "-d", dev, "--catalog", cat,
         *extra],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(bool(btrfs_missing()), reason=btrfs_missing())
def test_the_next_backup_runs_the_post_command_of_a_killed_run(tmp_path, subvolume):
    vol = subvolume
    make_tree(vol / "data", seed=52, files=8, big=(3_000_000,))
    snap = vol.parent / "snap"
    log = tmp_path / "post.log"
    pre = f"btrfs subvolume snapshot -r {vol} {snap} >/dev/null && echo {snap}"
    post = f'echo "$PARBACKUP_STATUS $PARBACKUP_SNAPSHOTS" >> {log}; btrfs subvolume delete {snap}'
    commands = ("--pre-command", pre, "--post-command", post)
    dev = tmp_path / "dev"
    dev.mkdir()
    cat = str(tmp_path / "cat.sqlite")

    for n, then in enumerate([commands, ()]):  # the next run with the commands, then without
        gate = tmp_path / f"gate{n}"
        fifo = pause_point(gate)
        proc = start_backup(vol, f"faulty+file://{dev}?pause_after=1M&gate={gate}", cat, *commands)
        assert wait_paused(proc, fifo)
        proc.kill()
        proc.wait()
        assert snap.is_dir() and not log.exists()  # the killed run's snapshot is left
        r = run_cli("backup", str(vol), "-d", str(dev), "--catalog", cat, *then)
        assert r.code == 0, r.out + r.err
        assert "ran the --post-command of a backup killed" in r.err, r.err
        assert not snap.exists()
        lines = log.read_text().splitlines()
        log.unlink()
        assert lines == [f"interrupted {snap}", f"complete {snap}"][: 2 - n], lines
    r = run_cli("backup", str(vol), "-d", str(dev), "--catalog", cat)  # nothing is left
    assert r.code == 0 and "killed" not in r.err, r.err


def test_a_backup_refused_by_the_run_lock_runs_neither_command(tmp_path):
    tree = make_tree(tmp_path / "src", seed=53, files=6, big=(2_000_000,))
    dev, other = tmp_path / "dev", tmp_path / "other"
    dev.mkdir()
    other.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    first = start_backup(
        tree, f"faulty+file://{dev}?pause_after=512K&gate={gate}", cat,
        "--post-command", f"touch {tmp_path / 'first-post'}",
    )  # fmt: skip
    try:
        assert wait_paused(first, fifo)
        r = run_cli(
            "backup", str(tree), "-d", str(other), "--catalog", cat,
            "--pre-command", f"touch {tmp_path / 'second-pre'}",
            "--post-command", f"touch {tmp_path / 'second-post'}",
        )  # fmt: skip
        assert r.code == 1 and "in use by another backup" in r.err, r.out + r.err
        # (its post command would release the snapshot the first run is reading)
        assert not (tmp_path / "second-pre").exists()
        assert not (tmp_path / "second-post").exists()
    finally:
        gate.touch()
        assert first.wait(120) == 0
    assert (tmp_path / "first-post").exists()

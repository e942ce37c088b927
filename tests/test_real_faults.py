"""Device failures made real: a tmpfs another process fills up (ENOSPC), an ext4 disk
that dies under the backup (EIO), an ext4 that turns read-only mid-backup after an
error (EROFS), a read-only mount met at the start, a device-mapper disk swapped for the
``error`` target.

The fault itself is real; the ``faulty+`` wrapper only *pauses* the device at a known
point (``pause_after=...&gate=...``) so the test can break the filesystem mid-backup
deterministically. After each run the broken filesystem is unmounted before the restore,
which must still give back every byte.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import make_tree
from failcases import backup, by_url, finish, restore_and_compare, start_backup
from fsfixtures import (  # noqa: F401 (fixtures)
    Gate,
    dm_ext4_fixture,
    ext4_fixture,
    fill_up,
    shut_down,
    tmpfs_fixture,
    turn_read_only,
    unmount,
)

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(180)]  # not quick


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """About 4.5 MiB, two large files among many small ones."""
    return make_tree(
        tmp_path / "src", seed=11, files=40, max_size=100_000, big=(2_000_000, 600_000)
    )


def paused(path: Path, gate: Gate, after: str = "300K") -> str:
    return f"faulty+file://{path}?pause_after={after}&gate={gate}"


def test_tmpfs_fills_up_mid_backup(tmp_path, src, tmpfs):
    small = tmpfs("small", "16m")
    d0, d2 = tmp_path / "d0", tmp_path / "d2"
    d0.mkdir(), d2.mkdir()
    gate = Gate(tmp_path / "gate")
    url = paused(small, gate)
    proc = start_backup(tmp_path, src, [str(d0), url, str(d2)])
    gate.wait_paused(proc)
    fill_up(small)  # another process takes every free byte
    gate.open()
    code, doc, err = finish(proc)
    assert code == 3, err
    failed = by_url(doc)[url]
    assert failed["status"] == "failed"
    assert "No space left on device" in failed["error"]
    assert "injected" not in failed["error"]
    assert set(failed["redirected"]) == {str(d0), str(d2)}
    assert doc["balance"]["spread_bytes"] <= 1
    unmount(small)
    restore_and_compare(tmp_path, src)


def test_disk_dies_mid_backup(tmp_path, src, ext4):
    disk = ext4("disk")
    d0 = tmp_path / "d0"
    d0.mkdir()
    gate = Gate(tmp_path / "gate")
    url = paused(disk, gate)
    proc = start_backup(tmp_path, src, [url, str(d0)], "--strategy", "threshold")
    gate.wait_paused(proc)
    shut_down(disk)  # every later read and write fails with EIO
    gate.open()
    code, doc, err = finish(proc)
    assert code == 3, err
    assert "Input/output error" in by_url(doc)[url]["error"]
    assert by_url(doc)[str(d0)]["bytes"] == doc["bytes"]
    unmount(disk)
    restore_and_compare(tmp_path, src)


def test_filesystem_turns_read_only_mid_backup(tmp_path, src, ext4):
    disk = ext4("disk")
    d0, d2 = tmp_path / "d0", tmp_path / "d2"
    d0.mkdir(), d2.mkdir()
    gate = Gate(tmp_path / "gate")
    url = paused(disk, gate)
    proc = start_backup(tmp_path, src, [str(d0), url, str(d2)])
    gate.wait_paused(proc)
    turn_read_only(disk)  # an ext4 error with errors=remount-ro: EROFS from now on
    gate.open()
    code, doc, err = finish(proc)
    assert code == 3, err
    assert "Read-only file system" in by_url(doc)[url]["error"]
    assert doc["balance"]["spread_bytes"] <= 1
    unmount(disk)
    restore_and_compare(tmp_path, src)


def test_read_only_filesystem_before_the_backup(tmp_path, src, ext4):
    ro = ext4("ro", readonly=True)
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    d0.mkdir(), d1.mkdir()
    r = backup(tmp_path, src, [str(d0), str(ro), str(d1)])
    assert r.code == 3, r.err
    assert r.json["status"] == "degraded"
    assert "not writable" in by_url(r.json)[str(ro)]["error"]
    assert f"device failed: {ro}" in r.err
    restore_and_compare(tmp_path, src)


@pytest.mark.slow
def test_two_real_failures_in_one_run(tmp_path, src, tmpfs, ext4):
    full, dead = tmpfs("full", "16m"), ext4("dead")
    d1, d3 = tmp_path / "d1", tmp_path / "d3"
    d1.mkdir(), d3.mkdir()
    g_full, g_dead = Gate(tmp_path / "g-full"), Gate(tmp_path / "g-dead")
    urls = [paused(full, g_full, "100K"), str(d1), paused(dead, g_dead, "500K"), str(d3)]
    proc = start_backup(tmp_path, src, urls)
    g_full.wait_paused()
    g_dead.wait_paused()
    fill_up(full)
    g_full.open()
    shut_down(dead)
    g_dead.open()
    code, doc, err = finish(proc)
    assert code == 3, err
    assert [d["status"] for d in doc["devices"]] == ["failed", "ok", "failed", "ok"]
    assert "No space left" in doc["devices"][0]["error"]
    assert "Input/output error" in doc["devices"][2]["error"]
    assert doc["balance"]["spread_bytes"] <= 1
    unmount(full)
    unmount(dead)
    restore_and_compare(tmp_path, src)


@pytest.mark.slow
def test_every_real_device_fails(tmp_path, src, tmpfs, ext4):
    full, dead = tmpfs("full", "16m"), ext4("dead")
    g_full, g_dead = Gate(tmp_path / "g-full"), Gate(tmp_path / "g-dead")
    proc = start_backup(tmp_path, src, [paused(full, g_full), paused(dead, g_dead)])
    g_full.wait_paused()
    g_dead.wait_paused()
    fill_up(full)
    shut_down(dead)
    g_full.open()
    g_dead.open()
    code, doc, err = finish(proc)
    assert code == 1, err
    assert doc["status"] == "failed" and doc["bytes"] == 0
    assert "every device failed" in doc["error"]
    db = sqlite3.connect(tmp_path / "cat.sqlite")
    assert db.execute("SELECT count(*) FROM records").fetchone() == (0,)


def test_device_mapper_disk_starts_failing(tmp_path, src, dm_ext4):
    disk, break_it = dm_ext4("dm")
    d0 = tmp_path / "d0"
    d0.mkdir()
    gate = Gate(tmp_path / "gate")
    url = paused(disk, gate)
    proc = start_backup(tmp_path, src, [str(d0), url])
    gate.wait_paused(proc)
    break_it()
    gate.open()
    code, doc, err = finish(proc)
    assert code == 3, err
    assert by_url(doc)[url]["status"] == "failed"
    unmount(disk)
    restore_and_compare(tmp_path, src)

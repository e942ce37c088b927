"""Device failure mid-backup (REQUIREMENTS R1-R4), driven through the real CLI.

Faults come from the ``faulty+file://`` wrapper around real directory devices: a device
that breaks after N bytes, hangs, flakes, or is unreachable from the start. Every test
restores and compares the bytes; where a device failed, its directory is removed first,
so the degraded set is shown not to need it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from failcases import backup, by_url, dirs, restore_and_compare, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # end to end: not in the quick subset

HANG = "3"
"""``--device-timeout`` where a device hangs: the hung one is given up after it, and every
healthy mover must have started and opened its device within it. At 1 second, a loaded
machine (load 9, the interpreter start-up of five movers at once) failed healthy devices
too ("no answer within 1 seconds") in 3 tests of one run."""


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """About 6 MiB: many small files and two large ones that get split."""
    return make_tree(tmp_path / "src", seed=7, files=50, max_size=120_000, big=(2_500_000, 900_000))


@pytest.mark.parametrize("strategy", ["fill", "threshold"])
def test_device_fails_mid_write(tmp_path, src, strategy):
    d = dirs(tmp_path, 3)
    bad = f"faulty+file://{d[1]}?fail_after=700K"
    r = backup(tmp_path, src, [str(d[0]), bad, str(d[2])], "--strategy", strategy)
    assert r.code == 3, r.err
    doc = r.json
    assert doc["status"] == "degraded"
    failed = by_url(doc)[bad]
    assert failed["status"] == "failed"
    assert "Input/output error" in failed["error"]
    assert failed["failed_at"] >= 0 and failed["failed_utc"]
    assert failed["bytes"] == 0
    # Its whole share, written or not, went to the two survivors.
    assert set(failed["redirected"]) == {str(d[0]), str(d[2])}
    assert sum(failed["redirected"].values()) > 700_000
    ok = [x for x in doc["devices"] if x["status"] == "ok"]
    assert sum(x["bytes"] for x in ok) == doc["bytes"]
    assert doc["balance"]["devices"] == 2
    if strategy == "fill":
        assert doc["balance"]["spread_bytes"] <= 1
    else:  # within one item: no item is larger than the survivors' threshold
        assert doc["balance"]["spread_bytes"] <= (doc["bytes"] + 1) // 2
    assert "device failed" in r.err and bad in r.err
    restore_and_compare(tmp_path, src, remove=[d[1]])


def test_human_summary_names_the_failure(tmp_path, src):
    d = dirs(tmp_path, 3)
    bad = f"faulty+file://{d[2]}?fail_after=100K&error=enospc"
    cat = str(tmp_path / "cat.sqlite")
    args = ["-d", str(d[0]), "-d", str(d[1]), "-d", bad]
    r = run_cli("backup", str(src), *args, "--catalog", cat)
    assert r.code == 3, r.err
    assert "No space left on device" in r.out
    assert "redirected" in r.out and "balance over the 2 surviving devices" in r.out
    assert "status: degraded" in r.out
    restore_and_compare(tmp_path, src, remove=[d[2]])


def test_two_devices_fail_one_after_another(tmp_path, src):
    d = dirs(tmp_path, 4)
    urls = [
        f"faulty+file://{d[0]}?fail_after=300K",
        str(d[1]),
        f"faulty+file://{d[2]}?fail_after=1200K&error=enospc",
        str(d[3]),
    ]
    r = backup(tmp_path, src, urls)
    assert r.code == 3, r.err
    doc = r.json
    assert [x["status"] for x in doc["devices"]] == ["failed", "ok", "failed", "ok"]
    assert doc["balance"]["spread_bytes"] <= 1
    restore_and_compare(tmp_path, src, remove=[d[0], d[2]])


def test_every_device_fails(tmp_path, src):
    d = dirs(tmp_path, 3)
    urls = [f"faulty+file://{x}?fail_after={200 * (i + 1)}K" for i, x in enumerate(d)]
    r = backup(tmp_path, src, urls)
    assert r.code == 1, r.err
    doc = r.json
    assert doc["status"] == "failed"
    assert "every device failed" in doc["error"]
    assert doc["bytes"] == 0
    assert all(x["status"] == "failed" for x in doc["devices"])
    cat = str(tmp_path / "cat.sqlite")
    db = sqlite3.connect(cat)
    assert db.execute("SELECT count(*) FROM records").fetchone() == (0,)
    assert db.execute("SELECT status FROM sets").fetchall() == [("failed",)]
    r = run_cli("files", "--set", doc["set"], "--catalog", cat, "--json")
    # no file is listed as backed up: the set is refused as restore refuses it
    assert r.code == 1 and "is failed, not restorable" in r.json["error"], r.out
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code != 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_hung_device_is_given_up_and_does_not_block_exit(tmp_path, src):
    """A device that blocks for ever in write, abort and close: the timeout catches it."""
    d = dirs(tmp_path, 3)
    hung = f"faulty+file://{d[1]}?hang_after=500K"
    r = backup(tmp_path, src, [str(d[0]), hung, str(d[2])], "--device-timeout", HANG)
    assert r.code == 3, r.err
    failed = by_url(r.json)[hung]
    assert failed["status"] == "failed"
    assert f"no progress for {HANG} seconds" in failed["error"]
    restore_and_compare(tmp_path, src, remove=[d[1]])


@pytest.mark.slow
def test_device_hung_before_the_backup(tmp_path, src):
    d = dirs(tmp_path, 3)
    hung = f"faulty+file://{d[2]}?hang_open=1"
    r = backup(tmp_path, src, [str(d[0]), str(d[1]), hung], "--device-timeout", HANG)
    assert r.code == 3, r.err
    assert f"no answer within {HANG} seconds" in by_url(r.json)[hung]["error"]
    restore_and_compare(tmp_path, src, remove=[d[2]])


@pytest.mark.slow
def test_transient_errors_are_retried(tmp_path, src):
    d = dirs(tmp_path, 2)
    flaky = f"faulty+file://{d[1]}?flaky=4"
    r = backup(tmp_path, src, [str(d[0]), flaky])
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    restore_and_compare(tmp_path, src)


@pytest.mark.slow
def test_lost_connection_fails_over_after_retries(tmp_path, src):
    d = dirs(tmp_path, 3)
    gone = f"faulty+file://{d[0]}?fail_after=400K&error=conn"
    r = backup(tmp_path, src, [gone, str(d[1]), str(d[2])])
    assert r.code == 3, r.err
    err = by_url(r.json)[gone]["error"]
    assert "connection lost" in err and "gave up after 5 attempts" in err
    restore_and_compare(tmp_path, src, remove=[d[0]])


def test_unreachable_devices_before_start(tmp_path, src):
    d = dirs(tmp_path, 2)
    missing = str(tmp_path / "not-mounted")
    unreachable = f"faulty+file://{d[1]}?fail_open=1"
    r = backup(tmp_path, src, [missing, str(d[0]), unreachable])
    assert r.code == 3, r.err
    doc = r.json
    assert doc["status"] == "degraded"
    assert "no such directory" in by_url(doc)[missing]["error"]
    assert "host unreachable" in by_url(doc)[unreachable]["error"]
    assert by_url(doc)[str(d[0])]["bytes"] == doc["bytes"]
    restore_and_compare(tmp_path, src)


def test_no_device_usable_before_start(tmp_path, src):
    r = backup(tmp_path, src, [str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.code == 1
    assert r.json["status"] == "failed"
    assert "no device could be opened" in r.json["error"]


def test_redirect_to_a_device_that_is_committing(tmp_path, src):
    """Regression: work redirected to a device while it commits its first volume.

    The Committed answering the first FINISH used to mark the redirected work committed
    too, so the run ended before it was recorded ("records missing from the catalog").
    The gates order the events: d0 finishes and holds its commit; d1 then fails; only
    after the failure is reported does d0's commit go on.
    """
    d = dirs(tmp_path, 2)
    g0, g1 = tmp_path / "gate0", tmp_path / "gate1"
    urls = [
        f"faulty+file://{d[0]}?pause_commit=1&gate={g0}",
        f"faulty+file://{d[1]}?pause_after=200K&fail_after=300K&gate={g1}",
    ]
    cat = str(tmp_path / "cat.sqlite")
    args = [a for u in urls for a in ("--device", u)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", str(src), *args, "--catalog", cat],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(Path(f"{g0}.paused"))
        wait_for(Path(f"{g1}.paused"))
        g1.touch()
        assert "device failed" in proc.stderr.readline()
        g0.touch()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, out
    restore_and_compare(tmp_path, src, remove=[d[1]])


def test_failure_under_time_balance(tmp_path, src):
    """With --balance time the replan weighs the survivors by their rates; all restores."""
    d = dirs(tmp_path, 3)
    bad = f"faulty+file://{d[2]}?speed=20M&fail_after=300K"
    urls = [f"{d[0]}?speed=30M", f"{d[1]}?speed=10M", bad]
    r = backup(tmp_path, src, urls, "--balance", "time")
    assert r.code == 3, r.err
    failed = by_url(r.json)[bad]
    assert failed["status"] == "failed"
    assert sum(failed["redirected"].values()) >= 300_000
    restore_and_compare(tmp_path, src, remove=[d[2]])


@pytest.mark.slow
def test_device_hanging_at_the_catalog_copy_does_not_hold_the_run(tmp_path, src):
    """The set is complete and durable everywhere; only the catalog copy is missing on
    the device that hung at the very end, and closing it is not waited for."""
    d = dirs(tmp_path, 2)
    hangs = f"faulty+file://{d[1]}?hang_catalog=1"
    r = backup(tmp_path, src, [str(d[0]), hangs], "--device-timeout", HANG)
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    assert f"could not copy the catalog to {hangs}: no progress for {HANG} seconds" in r.err
    assert (d[0] / "catalog" / "catalog.sqlite").exists()
    assert not (d[1] / "catalog" / "catalog.sqlite").exists()
    restore_and_compare(tmp_path, src)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_three_kinds_of_failure_in_one_run(tmp_path, src, order):
    """Five devices; one breaks (EIO), one fills up, one hangs; two finish the set."""
    d = dirs(tmp_path, 5)
    urls = [
        f"faulty+file://{d[0]}?fail_after=150K",
        str(d[1]),
        f"faulty+file://{d[2]}?fail_after=600K&error=enospc",
        f"faulty+file://{d[3]}?hang_after=900K",
        str(d[4]),
    ]
    r = backup(tmp_path, src, urls, "--strategy", "threshold", "--order", order,
               "--device-timeout", HANG)  # fmt: skip
    assert r.code == 3, r.err
    doc = r.json
    assert [x["status"] for x in doc["devices"]] == ["failed", "ok", "failed", "failed", "ok"]
    errors = [x.get("error", "") for x in doc["devices"]]
    assert "Input/output error" in errors[0]
    assert "No space left" in errors[2]
    assert "no progress" in errors[3]
    assert doc["devices"][1]["bytes"] + doc["devices"][4]["bytes"] == doc["bytes"]
    restore_and_compare(tmp_path, src, remove=[d[0], d[2], d[3]])


def test_survivors_without_room_fail_the_backup(tmp_path, src):
    """The survivor cannot hold the failed device's share too: the set fails, clearly,
    and nothing of it is recorded as backed up."""
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    d = dirs(tmp_path, 2)
    small = f"{d[0]}?capacity={total * 3 // 4}"
    bad = f"faulty+file://{d[1]}?fail_after=100K"
    r = backup(tmp_path, src, [small, bad])
    assert r.code == 1, r.err
    doc = r.json
    assert doc["status"] == "failed" and doc["bytes"] == 0
    assert f"{bad} failed" in doc["error"] and "cannot take" in doc["error"]
    db = sqlite3.connect(tmp_path / "cat.sqlite")
    assert db.execute("SELECT count(*) FROM records").fetchone() == (0,)

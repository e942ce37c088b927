"""Parity written while the data is (engine/paritystream.py, paritytee.py), end to end
with real processes: a run killed mid-backup, a parity device failing mid-backup, and
time-balanced devices whose columns end far apart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from parbackup.catalog import Catalog

pytestmark = pytest.mark.slow

PARITY_RUN = """
import json, sys
from parbackup.catalog import Catalog
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup
with Catalog(sys.argv[1]) as catalog:
    report = run_backup([sys.argv[2]], sys.argv[3:], catalog,
                        BackupOptions(parity=1, checkpoint_bytes=256 << 10, chunk=128 << 10))
print(json.dumps(report.to_json()))
"""


def _dargs(urls) -> list[str]:
    return [a for u in urls for a in ("-d", str(u))]


def _paused_run(tmp_path: Path, cat: str, tree: Path, data: list[Path], parity: Path):
    """A backup with parity whose first data device pauses after 2 MiB (the others run
    on: the rows past the paused column wait for it); (process, gate)."""
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    urls = [f"faulty+file://{data[0]}?pause_after=2MiB&gate={gate}", *map(str, data[1:])]
    urls.append(str(parity))
    proc = subprocess.Popen(
        [sys.executable, "-c", PARITY_RUN, cat, str(tree), *urls],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if not wait_paused(proc, fifo):
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"the backup ended before it paused: {err.decode()[-2000:]}")
    return proc, gate


def _wait_whole_files_durable(proc: subprocess.Popen, cat: str, timeout: float = 120) -> bool:
    """Wait until the running set's catalog rows hold every byte of at least one file
    (the dispatcher writes a mover's durable records as it reads its messages, after the
    mover went on): True then, False if ``proc`` ended first. Reads the catalog, the
    state itself, every 10 ms; the deadline only bounds a run that hangs."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with Catalog(cat) as c:
            (run,) = c.sets()
            sizes = {f.file_id: f.entry.size for f in c.files(run.id)}
            got: dict[int, int] = {}
            for fid, ref in c.records(run.id):
                got[fid] = got.get(fid, 0) + ref.size
        if any(n and n == sizes.get(fid) for fid, n in got.items()):
            return True
        time.sleep(0.01)  # the poll's pace, not a guess at when the rows come
    return False


def test_a_run_killed_mid_backup_leaves_no_parity_for_its_set_and_prune_takes_it(
    tmp_path, device_dirs
):
    """Killed while a data device is paused mid-volume: the parity volume was being
    written at the same time (its rows so far are on the parity device), but the catalog
    never calls the set protected. The next run writes its parity whole while writing;
    prune deletes the dead run's partial parity volume; a data device then lost is read
    around."""
    tree = make_tree(tmp_path / "src", seed=21, files=40, big=(6_000_000, 5_000_000))
    *data, parity = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    proc, _gate = _paused_run(tmp_path, cat, tree, data, parity)
    # killed only once whole files of the run are durable in the catalog (records the
    # old code resumed from), not at whatever moment the pause is seen
    assert _wait_whole_files_durable(proc, cat), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    partial = list((parity / "sets").rglob("*.pbp"))
    assert len(partial) == 1 and partial[0].read_bytes()[:6] == b"PBKP\x03\x00"
    with Catalog(cat) as c:
        (dead,) = c.sets()
        assert dead.status in ("running", "interrupted")
        assert c.parity(dead.id) is None

    r = run_cli(
        "backup", str(tree), *_dargs([*data, parity]), "--parity", "1", "--catalog", cat, "--json"
    )
    assert r.code == 0, r.err
    assert r.json["parity"]["written"] == "while writing", r.json["parity"]
    assert r.json["reused"] == 0, r.json  # the dead run's volumes have no parity: no resume
    new_set = r.json["set"]
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    left = [p.relative_to(parity) for p in (parity / "sets").rglob("*.pbp")]
    assert [str(p).split("/")[1] for p in left] == [new_set], left

    shutil.rmtree(data[1])
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_a_parity_device_failing_mid_backup_costs_no_data(tmp_path, device_dirs):
    """The parity device breaks after its first MiB, while the movers still forward
    their units: the collector stops, the movers drain and go on, no data device fails
    and the set is complete; its report says it has no redundancy, and why."""
    tree = make_tree(tmp_path / "src", seed=22, files=40, big=(6_000_000, 5_000_000))
    *data, parity = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    urls = [*map(str, data), f"faulty+file://{parity}?fail_after=1MiB"]
    r = run_cli("backup", str(tree), *_dargs(urls), "--parity", "1", "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    assert [(d["status"], d.get("error")) for d in r.json["devices"]] == [("ok", None)] * 3
    assert r.json["status"] == "complete"
    assert r.json["parity"]["redundancy"] == 0, r.json["parity"]
    assert "injected" in r.json["parity"]["why_after"], r.json["parity"]
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)


def test_time_balanced_columns_of_very_unequal_length_stream_their_parity(tmp_path, device_dirs):
    """``--balance time`` with one device five times faster than the other two: the
    columns end far apart (and the slow ones hand work over as they fall behind); the
    rows past a short column's end need no unit from it. The parity is written while
    writing and any one data device lost is read around."""
    tree = make_tree(tmp_path / "src", seed=23, files=30, max_size=200_000, big=(9_000_000,))
    *data, parity = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    urls = [f"{data[0]}?speed=50M", f"{data[1]}?speed=10M&limit=8M", f"{data[2]}?speed=10M"]
    r = run_cli(
        "backup", str(tree), *_dargs([*urls, parity]), "--parity", "1", "--balance", "time",
        "--catalog", cat, "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["parity"]["written"] == "while writing", r.json["parity"]
    sizes = [d["bytes"] for d in r.json["devices"]]
    assert sizes[0] > 2 * max(sizes[1:]), sizes
    for lost in range(3):
        away = data[lost].with_name(data[lost].name + ".away")
        data[lost].rename(away)
        out = tmp_path / f"out{lost}"
        r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
        away.rename(data[lost])
        assert r.json["status"] == "ok", (lost, r.out, r.err)
        assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_a_tape_and_an_s3_prefix_as_data_devices_stream_their_parity(tmp_path, s3_server):
    """The tee sits under every device kind's writer: a tape image and an S3 prefix as
    data devices get their parity while writing; the tape is then cut in half and the
    set still restores whole."""
    tree = make_tree(tmp_path / "src", seed=24, files=25, big=(3_000_000, 2_500_000))
    (tmp_path / "d").mkdir()
    (tmp_path / "p").mkdir()
    tape = tmp_path / "tape.img"
    urls = [
        str(tmp_path / "d"),
        f"tape://{tape}",
        s3_server.url(s3_server.bucket("parity-stream"), "data"),
        str(tmp_path / "p"),
    ]
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), *_dargs(urls), "--parity", "1", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["parity"]["written"] == "while writing", r.json["parity"]
    with open(tape, "r+b") as fh:
        fh.truncate(tape.stat().st_size // 2)
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)


def test_the_text_report_says_what_the_set_survives(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=25, files=10, big=(1_500_000,))
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), *_dargs(devs), "--parity", "1", "--catalog", cat)
    assert r.code == 0, r.err
    line = "parity on 1 device(s): the set survives losing any 1 device(s) (written while writing)"
    assert line in r.out, r.out

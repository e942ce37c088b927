"""SIGKILL at random moments of a backup; two backups at once on one catalog."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.verify import run_verify

RESTORABLE = ("complete", "degraded")


def backup_cmd(tree: Path, devs: list[Path], cat: str) -> list[str]:
    args = [a for d in devs for a in ("--device", str(d))]
    return [
        sys.executable,
        "-m",
        "parbackup",
        "backup",
        str(tree),
        *args,
        "--catalog",
        cat,
        "--json",
    ]


def sets_on_devices(devs: list[Path]) -> set[str]:
    return {p.name for d in devs for p in (d / "sets").glob("*") if any(p.iterdir())}


def new_running_set(cat: str, seen: set[str]) -> bool:
    """True once a set not in ``seen`` is running (the killed runs' sets stay 'running'
    until the next run marks them interrupted)."""
    db = sqlite3.connect(cat, timeout=10)
    try:
        rows = db.execute("SELECT id FROM sets WHERE status='running'").fetchall()
    finally:
        db.close()
    return any(r[0] not in seen for r in rows)


def check_catalog(cat: str, verified: set[str]) -> dict[str, str]:
    """The catalog opens; every restorable set not yet checked verifies clean."""
    with Catalog(cat) as catalog:
        status = {s.id: s.status for s in catalog.sets()}
        for set_id, st in status.items():
            if st in RESTORABLE and set_id not in verified:
                report = run_verify(catalog, set_id)
                assert report.damaged == [], f"set {set_id} marked {st} but {report.damaged}"
                verified.add(set_id)
    return status


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path, device_dirs):
    big = (40 << 20, 20 << 20)
    tree = make_tree(tmp_path / "src", seed=11, files=120, max_size=200_000, big=big)
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    env = {**os.environ, "PYTHONPATH": SRC}
    started = time.monotonic()
    first = subprocess.run(backup_cmd(tree, devs, cat), env=env, capture_output=True)
    duration = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    verified: set[str] = set()
    status = check_catalog(cat, verified)
    (first_set,) = status
    rng = random.Random(20261124)
    kills = 12
    hit = 0  # kills that caught a run after it had begun its set
    seen = set(status)
    for i in range(kills):
        proc = subprocess.Popen(
            backup_cmd(tree, devs, cat),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if i % 2:  # any moment of the process's life, start-up and scan included
            time.sleep(rng.uniform(0.05, duration * 1.1))
        else:  # a moment after its set was begun, while its writers run
            delay = rng.uniform(0, duration / 2)
            while proc.poll() is None and not new_running_set(cat, seen):
                time.sleep(0.005)
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status = check_catalog(cat, verified)
        hit += any(s not in seen for s in status)
        seen.update(status)
        assert status[first_set] == "complete"
        # orphans of earlier kills were cleaned by the later runs: at most the last
        # killed set has volumes on the devices besides the restorable ones
        leftovers = sets_on_devices(devs) - {s for s, st in status.items() if st in RESTORABLE}
        assert len(leftovers) <= 1, (i, leftovers, status)
        assert all(status.get(s) in ("running", "interrupted", None) for s in leftovers)
    print(f"first backup {duration:.2f}s; {hit} of {kills} kills hit a running set")
    assert hit >= kills // 2
    # prune removes what the last killed run left
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    with Catalog(cat) as catalog:
        status = {s.id: s.status for s in catalog.sets()}
    assert set(status.values()) <= set(RESTORABLE)
    assert sets_on_devices(devs) == set(status)
    # the same backup again completes; both it and the first set restore exactly
    r = subprocess.run(backup_cmd(tree, devs, cat), env=env, capture_output=True)
    assert r.returncode == 0, r.stderr
    with Catalog(cat) as catalog:
        last = catalog.sets()[-1].id
        for set_id in (first_set, last):
            out = tmp_path / f"out-{set_id[:6]}"
            report = run_restore(catalog, RestoreOptions(target=str(out), set_ref=set_id))
            assert report.damaged == []
            assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_second_backup_is_refused_while_the_catalog_is_locked(tmp_path, tree, device_dirs):
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    holder = Catalog(cat)
    holder.lock_for_run()
    try:
        r = run_cli("backup", str(tree), *args, "--catalog", cat)
        assert r.code == 1
        assert f"the catalog {cat} is in use by another backup (pid {os.getpid()})" in r.err
    finally:
        holder.close()
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"


def test_two_backups_at_once_never_corrupt_the_catalog(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=4, files=60, big=(4 << 20,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [
        subprocess.Popen(
            backup_cmd(tree, devs, cat), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [(p.wait(), p.stdout.read().decode() + p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 1]), results
    if codes == [0, 1]:
        assert "is in use by another backup" in next(e for c, e in results if c == 1)
    with Catalog(cat) as catalog:
        done = [s for s in catalog.sets() if s.status == "complete"]
        assert len(done) == codes.count(0)
        for s in done:
            assert run_verify(catalog, s.id).damaged == []

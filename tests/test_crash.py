"""SIGKILL at random moments of a backup; two backups at once on one catalog."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import device_garbage, device_usage, pause_point, volumes_on, wait_paused
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import FRAMING_SLACK
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.verify import run_verify

RESTORABLE = ("complete", "degraded")


def backup_cmd(tree: Path, devs: list[Path] | list[str], cat: str) -> list[str]:
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


def whole_sets(cat: str) -> frozenset[str]:
    """Sets whose volumes are needed whole now: restorable, running, and what a running
    run reads from (catalog/liveness.py)."""
    with Catalog(cat) as catalog:
        return catalog.root_ids() | catalog.pinned_ids()


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
    before = whole_sets(cat)
    left: set[str] = set()  # sets whose volumes held garbage at the last check
    for i in range(kills):
        urls: list[str] = [str(d) for d in devs]
        fifo = None
        if i % 2 == 0:  # at a seeded byte offset of one device, after the run's clean-up
            gate = tmp_path / f"gate{i}"
            fifo = pause_point(gate)
            at = rng.randrange(1 << 20, 12 << 20)
            urls[0] = f"faulty+file://{devs[0]}?pause_after={at}&gate={gate}"
        proc = subprocess.Popen(
            backup_cmd(tree, urls, cat),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        paused = False
        if fifo is None:  # any moment of the process's life, start-up and scan included
            time.sleep(rng.uniform(0.05, duration * 1.1))  # the seeded kill moment
        else:
            paused = wait_paused(proc, fifo)  # a real event: the device paused
            time.sleep(rng.uniform(0, duration / 4))  # the seeded kill moment after it
            gate.touch()  # later users of this URL (prune) pass the pause at once
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status = check_catalog(cat, verified)
        new = {s for s in status if s not in seen}
        hit += bool(new)
        seen.update(status)
        assert status[first_set] == "complete"
        # every set with volumes on the devices is known to the catalog (none forgotten
        # while its volumes remain: those would be foreign for ever)
        assert sets_on_devices(devs) <= set(status), (i, status)
        # the devices hold nothing no live set needs, except what the last killed run
        # wrote and what it was reading from, and, when it was killed before its
        # clean-up was done, what the run before it had been reading from and what was
        # garbage already when it started: a run before it that completed (having
        # reused all it needed from the interrupted runs it resumed) left their unused
        # volumes to the next clean-up, and a kill during the scan comes before that
        garbage = device_garbage(devs, cat)
        assert {name.split("/")[2] for name in garbage} <= before | new | left, (i, garbage)
        if paused:  # it wrote, so it had cleaned up: nothing else is left
            assert garbage == {}, (i, garbage)
        before = whole_sets(cat)
        left = {name.split("/")[2] for name in garbage}
    print(f"first backup {duration:.2f}s; {hit} of {kills} kills hit a running set")
    assert hit >= kills // 2
    # prune removes what the last killed run left: the devices then hold exactly what
    # the live sets read, plus each volume's framing
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert device_garbage(devs, cat) == {}
    with Catalog(cat) as catalog:
        status = {s.id: s.status for s in catalog.sets()}
        restorable = {s for s, st in status.items() if st in RESTORABLE}
        referenced = catalog.referenced_sets(restorable)
        live = {
            (ref.label, ref.volume, ref.position): ref.header_size + ref.size
            for s in restorable
            for _, ref in catalog.records(s)
        }
    assert set(status) <= restorable | referenced, status  # dead sets only if still read
    assert sets_on_devices(devs) <= set(status)
    frames = device_usage(devs) - sum(live.values())
    assert 0 < frames <= len(volumes_on(devs)) * FRAMING_SLACK, frames
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


@pytest.mark.slow
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

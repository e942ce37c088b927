"""``forget`` with keep policies and ``backup --time``, end to end on directory devices.

A week of nightly incremental backups is simulated with ``backup --time``; ``forget
--keep-daily 3 --prune`` after each night keeps the devices' usage flat, every kept set
restores exactly, and a kept incremental set keeps the records it reuses from the sets
forgotten before it. A real ``forget --prune`` process is SIGKILLed at seeded moments
(around its one catalog transaction, and inside the prune after it): the kept sets
always restore.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot
from killpoints import device_garbage, pause_point, volumes_on, wait_paused
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import set_of_volume
from parbackup.catalog.runlock import RunLock

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

FILES, SIZE, CHANGED = 24, 96 * 1024, 3
"""The tree: FILES files of SIZE bytes; each night CHANGED of them get new contents."""


def make_week_tree(root: Path) -> Path:
    rng = random.Random(7)
    (root / "sub").mkdir(parents=True)
    for i in range(FILES):
        where = root / "sub" if i % 3 == 0 else root
        (where / f"f{i:02d}.bin").write_bytes(rng.randbytes(SIZE))
    os.symlink("f01.bin", root / "link")
    return root


def change_files(root: Path, night: int) -> None:
    """Night ``night`` rewrites CHANGED files (a different few each night)."""
    rng = random.Random(1000 + night)
    for k in range(CHANGED):
        i = (night * CHANGED + k) % FILES
        path = (root / "sub" if i % 3 == 0 else root) / f"f{i:02d}.bin"
        path.write_bytes(rng.randbytes(SIZE))
        os.utime(path, ns=(10**18 + night * 10**9 + k, 10**18 + night * 10**9 + k))


def stamp(night: int) -> str:
    return f"2026-03-{night + 1:02d}T02:00:00+00:00"


def bytes_on(devs: list[Path]) -> int:
    """Every byte on the device directories: volumes, catalog copies, labels."""
    return sum(p.stat().st_size for d in devs for p in d.rglob("*") if p.is_file())


def nightly_backup(tree: Path, devs: list[Path], cat: str, night: int) -> str:
    """One night: change the tree, back it up (incremental) under that night's time."""
    if night:
        change_files(tree, night)
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli(
        "backup", str(tree), *dargs, "--catalog", cat, "--incremental",
        "--time", stamp(night), "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["kind"] == ("incremental" if night else "full")
    return r.json["set"]


def statuses(cat: str) -> dict[str, str]:
    with Catalog(cat, create=False) as catalog:
        return {s.id: s.status for s in catalog.sets()}


def restores_exactly(tmp_path: Path, cat: str, set_id: str, tree: Path, want: dict) -> None:
    out = tmp_path / f"restore-{set_id[:8]}-{len(list(tmp_path.iterdir()))}"
    r = run_cli("restore", "--set", set_id, "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == want, set_id


def test_backup_time_records_the_set_under_the_given_time(tmp_path, device_dirs):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli(
        "backup", str(tree), *dargs, "--catalog", cat, "--time", "2020-02-29T23:30:00-02:00"
    )
    assert r.code == 0, r.err
    with Catalog(cat, create=False) as catalog:
        (info,) = catalog.sets()
    assert info.created == "2020-03-01T01:30:00+00:00"  # stored in UTC
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--time", "last tuesday")
    assert r.code == 2 and "ISO 8601" in r.err


@pytest.mark.slow
def test_a_week_with_keep_daily_3_and_prune_keeps_usage_flat(tmp_path, device_dirs):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    want: dict[str, dict] = {}
    nights: list[str] = []
    usage: list[tuple[int, int, int]] = []  # (before forget, after forget+prune, volumes)
    for night in range(7):
        set_id = nightly_backup(tree, devs, cat, night)
        nights.append(set_id)
        want[set_id] = snapshot(tree)
        before = bytes_on(devs)
        r = run_cli("forget", "--keep-daily", "3", "--prune", "--catalog", cat, "--json")
        assert r.code == 0, r.err
        assert r.json["status"] == "ok"
        kept = {k["set"] for g in r.json["groups"] for k in g["keep"]}
        assert kept == set(nights[-3:]), night
        usage.append((before, bytes_on(devs), sum(volumes_on(devs).values())))
        assert device_garbage(devs, cat) == {}, night  # prune left nothing reclaimable
    print("\nnight  before-forget  after-forget+prune  volumes-only  (bytes on 2 devices)")
    for night, (before, after, vols) in enumerate(usage):
        print(f"{night + 1:5d}  {before:13d}  {after:18d}  {vols:12d}")
    afters = [u[1] for u in usage]
    tree_bytes = FILES * SIZE
    # what three kept nights need: the tree once, and the files the two later nights changed
    live = tree_bytes + 2 * CHANGED * SIZE
    for night in range(3, 7):  # from the fourth night on, forgetting frees a night a night
        assert live <= usage[night][2] <= live * 1.10, (night, usage[night])
    assert max(afters[3:]) - min(afters[3:]) <= 0.05 * live, afters  # flat
    # without forget the devices would hold every night's changes
    assert afters[-1] < tree_bytes + 6 * CHANGED * SIZE * 0.8
    # the kept sets restore exactly; the forgotten ones are no longer restorable
    st = statuses(cat)
    for set_id in nights[-3:]:
        assert st[set_id] == "complete"
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])
    for set_id in nights[:-3]:
        assert st.get(set_id, "gone") in ("forgotten", "gone")
    r = run_cli("restore", "--set", nights[0], "--target", str(tmp_path / "x"), "--catalog", cat)
    assert r.code == 1 and ("forgotten" in r.err or "no backup set" in r.err), r.err
    # the oldest kept set reuses records that lie in forgotten sets' (compacted) volumes
    with Catalog(cat, create=False) as catalog:
        origins = {ref.origin_set for _, ref in catalog.records(nights[-3])} - {""}
        assert origins & set(nights[:-3]), origins
        assert all(st[o] in ("forgotten", "complete") for o in origins)
        assert set(nights[:-3]) & origins <= set(catalog.referenced_sets(catalog.root_ids()))
    for origin in origins & set(nights[:-3]):
        assert any(f"sets/{origin}/" in name for _, name in volumes_on(devs)), origin
    r = run_cli("verify", "--set", nights[-3], "--catalog", cat, "--json")
    assert r.code == 0, r.out


def test_forget_refuses_a_policy_that_keeps_nothing_and_a_dry_run_changes_nothing(
    tmp_path, device_dirs
):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    ids = [nightly_backup(tree, devs, cat, night) for night in range(3)]
    r = run_cli("forget", "--catalog", cat, "--json")
    assert r.code == 2 and r.json["status"] == "failed" and "keeps nothing" in r.json["error"]
    r = run_cli("forget", "--keep-last", "0", "--catalog", cat)
    assert r.code == 2 and "keeps nothing" in r.err
    before = statuses(cat)
    r = run_cli("forget", "--keep-last", "1", "--dry-run", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "dry-run"
    (group,) = r.json["groups"]
    assert [k["set"] for k in group["keep"]] == [ids[2]]
    assert group["keep"][0]["reasons"] == ["last"]
    assert [g["set"] for g in group["remove"]] == [ids[1], ids[0]]
    assert statuses(cat) == before  # nothing changed
    r = run_cli("forget", "--keep-last", "1", "--dry-run", "--catalog", cat)
    assert "would forget" in r.out and ids[0] in r.out


def test_forget_groups_by_sources_and_waits_for_no_running_backup(tmp_path, device_dirs):
    a = make_week_tree(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    (b / "one").write_bytes(b"one")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    dargs = [a for d in devs for a in ("-d", str(d))]
    ids = {}
    for night, src in enumerate([a, b, a, b, a]):
        r = run_cli("backup", str(src), *dargs, "--catalog", cat, "--time", stamp(night), "--json")
        assert r.code == 0, r.err
        ids.setdefault(src.name, []).append(r.json["set"])
    lock = RunLock(cat)  # a backup is running: forget must not touch the catalog
    assert lock.acquire()
    try:
        r = run_cli("forget", "--keep-last", "1", "--catalog", cat)
        assert r.code == 1 and "in use" in r.err, r.err
    finally:
        lock.release()
    assert set(statuses(cat).values()) == {"complete"}
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert sorted(r.json["forgotten"]) == sorted(ids["a"][:2] + ids["b"][:1])
    assert sorted(g["sources"] for g in r.json["groups"]) == [[str(a)], [str(b)]]
    r = run_cli("forget", "--keep-last", "1", "--group-by", "none", "--catalog", cat, "--json")
    assert r.json["forgotten"] == [ids["b"][1]]  # a's newest is the newest of all
    assert [g["sources"] for g in r.json["groups"]] == [None]
    r = run_cli("forget", "--keep-last", "1", "--group-by", "none", "--catalog", cat, "-n")
    assert r.out.startswith("all sets\n"), r.out


# -- SIGKILL at seeded moments ---------------------------------------------------------------


def start_forget(cat: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    args = [sys.executable, "-m", "parbackup", "forget", "--keep-daily", "2", "--prune"]
    return subprocess.Popen(
        [*args, "--catalog", cat, *extra], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_line(proc: subprocess.Popen, text: str) -> bool:
    """Read the process's stderr until a line holds ``text`` (True) or it ends (False)."""
    assert proc.stderr is not None
    return any(text in raw.decode(errors="replace") for raw in proc.stderr)


MOMENTS = ["forgetting", "forgot", "compact-write", "compact-commit"]
"""Where the forget process is killed: as it announces its one transaction (the signal
may land before or after the commit: all or none must be forgotten), right after the
commit, and inside the prune after it (a compacted volume half written, a compacted
volume about to be committed)."""


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_sigkill_during_forget_loses_nothing_a_kept_set_needs(tmp_path, device_dirs, moment):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    want: dict[str, dict] = {}
    ids = []
    for night in range(5):
        ids.append(nightly_backup(tree, devs, cat, night))
        want[ids[-1]] = snapshot(tree)
    kept = ids[-2:]
    if moment.startswith("compact"):
        gate = tmp_path / "gate"
        fifo = pause_point(gate)
        fault = "pause_after=0" if moment == "compact-write" else "pause_commit=1"
        urls = [a for d in devs for a in ("-d", f"faulty+file://{d}?{fault}&gate={gate}")]
        proc = start_forget(cat, *urls)
        reached = wait_paused(proc, fifo)
    else:
        proc = start_forget(cat)
        reached = wait_for_line(proc, f"{moment} 3 set(s)")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached, f"forget ended before {moment}"
    st = statuses(cat)
    forgotten = {i for i in ids if st[i] == "forgotten"}
    assert forgotten in (set(), set(ids[:3])), st  # one transaction: all or nothing
    if moment != "forgetting":
        assert forgotten == set(ids[:3]), st
    # no volume was left behind by a set the catalog no longer knows (it would be
    # foreign, never reclaimed)
    assert {set_of_volume(name) for _, name in volumes_on(devs)} <= set(st), st
    with sqlite3.connect(cat) as db:  # the catalog is sound after the kill
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for set_id in kept:
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])
    # the next forget finishes the job, and the kept sets still restore
    r = run_cli("forget", "--keep-daily", "2", "--prune", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert {s for s, v in statuses(cat).items() if v == "complete"} == set(kept)
    assert device_garbage(devs, cat) == {}
    for set_id in kept:
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])


def test_a_kept_incremental_set_keeps_the_records_it_reuses_from_a_forgotten_parent(
    tmp_path, device_dirs
):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    parent = nightly_backup(tree, devs, cat, 0)
    child = nightly_backup(tree, devs, cat, 1)  # reuses all but CHANGED files of parent
    want = snapshot(tree)
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["forgotten"] == [parent], r.out
    with Catalog(cat, create=False) as catalog:
        roots = catalog.root_ids()
        assert parent not in roots and child in roots  # forgotten: no root any more
        assert parent in catalog.referenced_sets(roots)  # but the child points into it
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert parent in r.json["compacted"] and parent not in r.json["forgotten"], r.json
    assert statuses(cat)[parent] == "forgotten"  # stays known while its records live
    assert device_garbage(devs, cat) == {}
    restores_exactly(tmp_path, cat, child, tree, want)
    r = run_cli("backup", str(tree), *[a for d in devs for a in ("-d", str(d))], "--catalog",
                cat, "--json")  # fmt: skip
    assert r.code == 0 and r.json["kind"] == "full"  # no --incremental: nothing reused
    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["forgotten"] == [child]
    assert set(r.json["prune"]["forgotten"]) == {parent, child}  # nothing points into them
    assert set(statuses(cat).values()) == {"complete"}
    for d in devs:  # the catalog copies on the devices no longer call them complete
        copy = tmp_path / f"copy-{d.name}.sqlite"
        shutil.copyfile(d / "catalog" / "catalog.sqlite", copy)
        st = statuses(str(copy))
        assert st.get(child, "gone") != "complete" and st.get(parent, "gone") != "complete"


def test_forget_prune_reports_an_unreachable_device_with_exit_3(tmp_path, device_dirs):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    ids = [nightly_backup(tree, devs, cat, night) for night in range(2)]
    devs[1].rename(tmp_path / "unplugged")
    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
    assert r.code == 3, r.err
    assert r.json["status"] == "warnings" and r.json["forgotten"] == [ids[0]]
    assert r.json["prune"]["unreachable"], r.json
    (tmp_path / "unplugged").rename(devs[1])
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")  # its leftovers go later
    assert r.code == 0, r.err
    assert device_garbage(devs, cat) == {}

"""``prune``: deleting dead volumes, compacting partly used ones (``--max-unused``), dry
runs, tapes, unreachable devices, SIGKILL at seeded moments, remote devices, and a week
of nightly backups whose devices stay flat.

Partly used volumes are made the way users make them: a nightly incremental set reuses
the unchanged files of the night before; once ``forget`` retires the older night, its
volumes hold the records the kept set still reads and the dead copies of the files
that changed since. Unused shares are computed here from the catalog rows and the files
themselves, independently of prune's own plan.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, run_cli, snapshot
from killpoints import device_garbage, pause_point, volumes_on, wait_paused
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import FRAMING_SLACK
from test_forget import (
    CHANGED,
    FILES,
    SIZE,
    bytes_on,
    make_week_tree,
    nightly_backup,
    restores_exactly,
    statuses,
    wait_for_line,
)

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


def dargs(urls: list[str] | list[Path]) -> list[str]:
    return [a for u in urls for a in ("-d", str(u))]


def unused_shares(devs: list[Path], cat: str) -> dict[str, float]:
    """'devdir/volume' -> unused share (0..1) of every volume that live sets need in part
    and that holds more than FRAMING_SLACK unused bytes (from the catalog and the files)."""
    with Catalog(cat, create=False) as catalog:
        roots = catalog.root_ids()
        whole = roots | catalog.pinned_ids()
        labels = {d: catalog_label(d) for d in devs}
        live: dict[tuple[str, str], dict[int, int]] = {}
        for set_id in roots:
            for _, ref in catalog.records(set_id):
                live.setdefault((ref.label, ref.volume), {})[ref.position] = (
                    ref.header_size + ref.size
                )
    out = {}
    for (d, name), size in volumes_on(devs).items():
        if name.split("/")[1] in whole:
            continue
        used = sum(live.get((labels[d], name), {}).values())
        if used and size - used > FRAMING_SLACK:
            out[f"{d.name}/{name}"] = (size - used) / size
    return out


def catalog_label(d: Path) -> str:
    return json.loads((d / "label.json").read_text())["label"]


def actions(doc: dict) -> dict[tuple[str, str], tuple[str, int]]:
    """(device URL, volume) -> (action, bytes) from a prune JSON document."""
    return {(v["device"], v["volume"]): (v["action"], v["bytes"]) for v in doc["volumes"]}


def two_nights_one_forgotten(tmp_path: Path, devs: list, changed_nights: int = 1):
    """A full night, ``changed_nights`` incremental ones, all but the last forgotten."""
    tree = make_week_tree(tmp_path / "src")
    cat = str(tmp_path / "cat.sqlite")
    ids = [nightly_backup(tree, devs, cat, n) for n in range(1 + changed_nights)]
    want = snapshot(tree)
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["forgotten"] == ids[:-1], r.out
    return tree, cat, ids, want


def test_max_unused_compacts_only_volumes_above_the_limit_and_dry_run_predicts_it(
    tmp_path, device_dirs
):
    devs = device_dirs(2)
    tree, cat, ids, want = two_nights_one_forgotten(tmp_path, devs)
    shares = unused_shares(devs, cat)
    assert shares, "the forgotten night's volumes are partly used"
    percents = sorted(100 * s for s in shares.values())
    limits = [percents[-1] + 0.5]  # above every volume: nothing is compacted
    if percents[0] + 0.5 < percents[-1]:
        limits.append(percents[0] + 0.25)  # between: only the more unused ones
    limits.append(0)  # every partly used volume
    for limit in limits:
        expect = {k for k, s in unused_shares(devs, cat).items() if 100 * s > limit}
        before = volumes_on(devs)
        r = run_cli("prune", "--max-unused", str(limit), "--dry-run", "--catalog", cat,
                    "--json")  # fmt: skip
        assert r.code == 0, r.err
        assert r.json["status"] == "dry-run" and r.json["dry_run"] is True
        dry = actions(r.json)
        assert volumes_on(devs) == before  # a dry run changes nothing
        named = {f"{Path(url).name}/{vol}" for (url, vol), (a, _) in dry.items() if a == "compact"}
        assert named == expect, (limit, named, shares)
        if limit == 0:
            r = run_cli("prune", "--dry-run", "--catalog", cat)
            assert r.code == 0 and "would compact sets/" in r.out, r.out
            assert "nothing was changed" in r.out and volumes_on(devs) == before, r.out
        r = run_cli("prune", "--max-unused", str(limit), "--catalog", cat, "--json")
        assert r.code == 0, r.err
        assert actions(r.json) == dry, limit  # the same volumes, the same bytes freed
        gone = sum(before.values()) - sum(volumes_on(devs).values())
        assert r.json["reclaimed_bytes"] == gone == sum(b for _, b in dry.values()), limit
        assert {k for k in unused_shares(devs, cat) if k in expect} == set()
        restores_exactly(tmp_path, cat, ids[-1], tree, want)
    assert device_garbage(devs, cat) == {}
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out
    r = run_cli("prune", "--catalog", cat)
    assert r.code == 0 and "nothing to prune" in r.out, r.out


def test_compaction_checks_every_record_it_copies_and_keeps_the_old_volume_on_damage(
    tmp_path, device_dirs
):
    devs = device_dirs(2)
    tree, cat, ids, want = two_nights_one_forgotten(tmp_path, devs)
    partly = sorted(unused_shares(devs, cat))
    assert len(partly) == 2, partly  # one partly used volume on each device
    with Catalog(cat, create=False) as catalog:
        refs = [ref for _, ref in catalog.records(ids[-1]) if f"sets/{ids[0]}/" in ref.volume]
    by_dev = {catalog_label(d): d for d in devs}
    # a live record's payload damaged on the first device ...
    first = min(refs, key=lambda r: (r.label != catalog_label(devs[0]), r.position))
    bad = by_dev[first.label] / first.volume
    at = first.position + first.header_size + first.size // 2
    flip(bad, at)
    damaged = bad.read_bytes()
    # ... and a byte no live set needs on the second (compaction never copies it)
    other = by_dev[catalog_label(devs[1])]
    ours = sorted((r.position, r.position + r.header_size + r.size) for r in refs
                  if by_dev[r.label] == other)  # fmt: skip
    (vol2,) = {r.volume for r in refs if by_dev[r.label] == other}
    gap = next(end for (_, end), (nxt, _) in itertools.pairwise(ours) if nxt > end)
    flip(other / vol2, gap)
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 3 and r.json["status"] == "warnings", r.out
    assert list(r.json["problems"]) == [first.label], r.json
    assert "damaged" in r.json["problems"][first.label]
    assert r.json["unreachable"] == {}
    assert bad.read_bytes() == damaged  # the old volume stays, nothing switched to a copy
    assert not list(bad.parent.glob("*.c1.pbv"))
    assert [Path(v["device"]) for v in r.json["volumes"]] == [other]  # the other was done
    flip(bad, at)  # repaired: the next prune compacts it too
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0 and [Path(v["device"]) for v in r.json["volumes"]] == [by_dev[first.label]]
    assert device_garbage(devs, cat) == {}
    restores_exactly(tmp_path, cat, ids[-1], tree, want)
    # the catalog copies on the devices name the compacted volumes
    for d in devs:
        copy = tmp_path / f"copy-{d.name}.sqlite"
        shutil.copyfile(d / "catalog" / "catalog.sqlite", copy)
        restores_exactly(tmp_path, str(copy), ids[-1], tree, want)


def flip(path: Path, at: int) -> None:
    """Invert one byte of a file in place."""
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_a_tape_is_free_only_once_nothing_on_it_is_live(tmp_path, device_dirs):
    tree = make_week_tree(tmp_path / "src")
    (disk,) = device_dirs(1)
    tapes = [tmp_path / f"tape{i}.img" for i in range(2)]
    cat = str(tmp_path / "cat.sqlite")

    def night(n: int, tape: Path, *extra: str) -> str:
        r = run_cli("backup", str(tree), "-d", str(disk), "-d", f"tape://{tape}",
                    "--catalog", cat, "--time", f"2026-03-0{n + 1}T02:00:00+00:00",
                    "--json", *extra)  # fmt: skip
        assert r.code == 0, r.err
        return r.json["set"]

    def prune_free() -> set[str]:
        r = run_cli("prune", "--catalog", cat, "--json")
        assert r.code == 0, r.out + r.err
        return {t["url"].removeprefix("tape://") for t in r.json["free_tapes"]}

    first = night(0, tapes[0])
    assert prune_free() == set()  # the first set is live, and so is its tape
    # the next night's incremental set reuses records on the disk only (a tape not in
    # the run cannot be read by it): its share of tape 0 is written again on tape 1
    second = night(1, tapes[1], "--incremental")
    assert prune_free() == set()
    size = tapes[0].stat().st_size
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.json["forgotten"] == [first], r.out
    r = run_cli("prune", "--catalog", cat)
    assert r.code == 0, r.err
    assert f"tape tape://{tapes[0]} (label " in r.out and "is free" in r.out, r.out
    assert prune_free() == {str(tapes[0])}
    assert tapes[0].stat().st_size == size  # a tape is never compacted nor deleted from
    want = snapshot(tree)
    restores_exactly(tmp_path, cat, second, tree, want)
    third = night(2, tapes[0])  # the freed tape is written again
    assert prune_free() == set()  # tape 0 holds the third set, tape 1 the second
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.json["forgotten"] == [second], r.out
    assert prune_free() == {str(tapes[1])}
    assert statuses(cat) == {third: "complete"}  # nothing points into the others now
    restores_exactly(tmp_path, cat, third, tree, want)


def test_prune_names_an_unreachable_device_and_reclaims_its_share_when_it_is_back(
    tmp_path, device_dirs
):
    devs = device_dirs(2)
    tree, cat, ids, want = two_nights_one_forgotten(tmp_path, devs)
    # forget --prune --max-unused 100 deletes dead volumes but compacts nothing
    r = run_cli("forget", "--keep-last", "1", "--prune", "--max-unused", "100", "--catalog",
                cat, "--json")  # fmt: skip
    assert r.code == 0 and r.json["prune"]["max_unused"] == 100, r.out
    assert r.json["prune"]["compacted"] == {}, r.json
    garbage = device_garbage(devs, cat)
    assert {k.split("/")[0] for k in garbage} == {d.name for d in devs}, garbage
    label = catalog_label(devs[1])
    away = tmp_path / "unplugged"
    devs[1].rename(away)
    r = run_cli("prune", "--catalog", cat)
    assert r.code == 3, r.out + r.err
    assert f"unreachable: device {label}" in r.out + r.err
    r = run_cli("forget", "--keep-last", "1", "--prune", "--catalog", cat, "--json")
    assert r.code == 3 and list(r.json["prune"]["unreachable"]) == [label], r.out
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 3 and r.json["status"] == "warnings"
    assert list(r.json["unreachable"]) == [label]
    assert r.json["volumes"] == []  # forget --prune already compacted the reachable one
    away.rename(devs[1])
    assert {k.split("/")[0] for k in device_garbage(devs, cat)} == {devs[1].name}
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["unreachable"] == {}, r.out
    assert {Path(v["device"]).name for v in r.json["volumes"]} == {devs[1].name}
    assert device_garbage(devs, cat) == {}
    restores_exactly(tmp_path, cat, ids[-1], tree, want)


# -- SIGKILL at seeded moments ---------------------------------------------------------------

MID_COPY = random.Random(14).randrange(1, 400_000)
"""A seeded byte offset inside the first compacted copy (each is several hundred KiB)."""

KILL_MOMENTS = ["compact-write", "compact-write-mid", "compact-commit", "switched",
                "between-devices"]  # fmt: skip
"""Where a prune is killed: as a compacted copy starts, and at a seeded offset inside it;
as it is about to be committed; after the catalog switched to it, before the old volume
is deleted; and after the first device was done, before the second (and the catalog
copies)."""


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_sigkill_during_prune_loses_nothing_a_live_set_needs(tmp_path, device_dirs, moment):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    want: dict[str, dict] = {}
    ids = []
    for n in range(5):
        ids.append(nightly_backup(tree, devs, cat, n))
        want[ids[-1]] = snapshot(tree)
    r = run_cli("forget", "--keep-daily", "2", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["forgotten"] == ids[:3], r.out
    kept = ids[3:]
    assert unused_shares(devs, cat), "there are partly used volumes to compact"
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "parbackup", "prune", "--max-unused", "5", "--catalog", cat]
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    fault = {
        "compact-write": "pause_after=0",
        "compact-write-mid": f"pause_after={MID_COPY}",
        "compact-commit": "pause_commit=1",
        "switched": "pause_delete=1",
    }.get(moment)
    if fault:
        urls = [f"faulty+file://{d}?{fault}&gate={gate}" for d in devs]
        cmd += dargs(urls)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        reached = wait_paused(proc, fifo) if fault else wait_for_line(proc, ": deleted ")
        if moment == "switched" and reached:
            with Catalog(cat, create=False) as catalog:  # the switch is committed
                vols = {ref.volume for s in kept for _, ref in catalog.records(s)}
            assert any(v.endswith(".c1.pbv") for v in vols), vols
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert reached, f"prune ended before {moment}"
    with sqlite3.connect(cat) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for set_id in kept:  # every live set restores byte for byte after the kill
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out
    # the next prune finishes the job (the half-written copy is garbage of a dead set)
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert device_garbage(devs, cat) == {}
    assert not any(".c1.pbv.tmp" in n or n.endswith(".part") for _, n in volumes_on(devs))
    for set_id in kept:
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])


# -- remote devices ----------------------------------------------------------------------------


def test_prune_compacts_on_sftp_and_s3_devices(tmp_path, sshd, s3_server):
    tree = make_week_tree(tmp_path / "src")
    remote = tmp_path / "sftp-dev"
    remote.mkdir()
    urls = [sshd.url(remote), s3_server.url(s3_server.bucket("prune"), "dev")]
    cat = str(tmp_path / "cat.sqlite")
    ids = []
    for n in range(2):
        ids.append(nightly_backup(tree, urls, cat, n))  # type: ignore[arg-type]
    want = snapshot(tree)
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.json["forgotten"] == ids[:1], r.out
    r = run_cli("prune", "--dry-run", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    dry = actions(r.json)
    kinds = {url.split(":")[0] for url, _ in dry}
    assert kinds == {"sftp", "s3"}, dry  # both devices hold a partly used volume
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert actions(r.json) == dry
    assert {a for a, _ in dry.values()} == {"compact"}
    restores_exactly(tmp_path, cat, ids[-1], tree, want)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["volumes"] == [], r.out


# -- a week ------------------------------------------------------------------------------------


def test_a_week_with_keep_daily_3_and_prune_max_unused_10_stays_flat(tmp_path, device_dirs):
    tree = make_week_tree(tmp_path / "src")
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    nights: list[str] = []
    want: dict[str, dict] = {}
    after: list[int] = []
    for n in range(7):
        nights.append(nightly_backup(tree, devs, cat, n))
        want[nights[-1]] = snapshot(tree)
        r = run_cli("forget", "--keep-daily", "3", "--catalog", cat, "--json")
        assert r.code == 0, r.err
        r = run_cli("prune", "--max-unused", "10", "--catalog", cat, "--json")
        assert r.code == 0, r.err
        after.append(sum(volumes_on(devs).values()))
        # no partly used volume is left with more than 10 % unused
        assert all(s <= 0.10 for s in unused_shares(devs, cat).values()), n
    print("\nnight  volume bytes on 2 devices (after forget + prune --max-unused 10)")
    for n, v in enumerate(after):
        print(f"{n + 1:5d}  {v:10d}")
    live = FILES * SIZE + 2 * CHANGED * SIZE  # the tree once, and two nights' changes
    # bounded: what three nights need, plus at most 10 % unused per volume and framing
    for n in range(3, 7):
        assert live <= after[n] <= live / 0.9 + 16 * FRAMING_SLACK, (n, after)
    assert max(after[3:]) - min(after[3:]) <= 0.12 * live, after  # flat
    for set_id in nights[-3:]:
        restores_exactly(tmp_path, cat, set_id, tree, want[set_id])
    assert bytes_on(devs) > 0

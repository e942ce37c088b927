"""rebuild-catalog: a catalog recreated from the devices alone restores the same files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.rebuild import rebuild_catalog
from parbackup.format import RecordHeader, VolumeHeader, checksum, end_record
from parbackup.readback.restore import RestoreOptions, run_restore


@pytest.fixture
def two_sets(tmp_path, device_dirs):
    """Two full sets of a changing tree on three devices; (tree, devices, catalog, ids)."""
    tree = make_tree(tmp_path / "src", seed=21, files=30, max_size=100_000, big=(3 << 20,))
    (tree / "odd-\udcff-name").write_bytes(b"not utf-8")
    devs = device_dirs(3)
    cat = str(tmp_path / "orig.sqlite")
    ids = []
    with Catalog(cat) as catalog:
        for round_ in range(2):
            (tree / f"round{round_}.txt").write_text(f"round {round_}\n")
            report = run_backup([str(tree)], [str(d) for d in devs], catalog)
            assert report.status == "complete"
            ids.append(report.set_id)
    return tree, devs, cat, ids


def restore_tree(cat: str, set_id: str, target: Path) -> dict:
    with Catalog(cat) as catalog:
        report = run_restore(catalog, RestoreOptions(target=str(target), set_ref=set_id))
    return {"damaged": report.damaged, "files": report.files, "target": target}


def listing(cat: str, set_id: str) -> list[tuple]:
    with Catalog(cat) as catalog:
        return [
            (
                f.file_id,
                f.entry.path,
                str(f.entry.kind),
                f.entry.size,
                f.entry.mode,
                f.entry.mtime_ns,
                f.entry.link,
                f.state,
            )
            for f in catalog.files(set_id)
        ]


@pytest.mark.slow
def test_rebuilt_catalog_restores_what_the_original_does(two_sets, tmp_path):
    tree, devs, cat, ids = two_sets
    new = str(tmp_path / "new.sqlite")
    r = run_cli(
        "rebuild-catalog", *[a for d in devs for a in ("-d", str(d))], "--catalog", new, "--json"
    )
    assert r.code == 0, r.err + r.out
    doc = r.json
    assert [s["set"] for s in doc["sets"]] == ids
    assert all(s["status"] == "complete" and not s["incomplete"] for s in doc["sets"])
    with Catalog(new) as catalog:
        assert [(s.id, s.status, s.sources) for s in catalog.sets()] == [
            (i, "complete", [str(tree)]) for i in ids
        ]
    for set_id in ids:
        assert listing(new, set_id) == listing(cat, set_id)
        a = restore_tree(cat, set_id, tmp_path / f"a-{set_id}")
        b = restore_tree(new, set_id, tmp_path / f"b-{set_id}")
        assert a["damaged"] == b["damaged"] == []
        assert a["files"] == b["files"]
        assert snapshot(restored_root(a["target"], tree)) == snapshot(
            restored_root(b["target"], tree)
        )
    assert snapshot(restored_root(tmp_path / f"b-{ids[1]}", tree)) == snapshot(tree)


@pytest.mark.slow
def test_rebuild_with_a_device_missing_names_the_incomplete_files(two_sets, tmp_path):
    tree, devs, cat, ids = two_sets
    new = str(tmp_path / "new.sqlite")
    report = rebuild_catalog([str(devs[0]), str(devs[1])], new)
    assert report.exit_code == 3
    last = report.sets[-1]
    assert last["status"] == "degraded"
    # the files whose records are split between present and missing devices are named
    with Catalog(cat) as catalog:
        holders: dict[int, set[str]] = {}
        for fid, ref in catalog.records(ids[1]):
            holders.setdefault(fid, set()).add(ref.label)
        missing_label = json.loads((devs[2] / "label.json").read_text())["label"]
        paths = {f.file_id: f.entry.path for f in catalog.files(ids[1])}
    split = sorted(
        paths[f] for f, labs in holders.items() if missing_label in labs and len(labs) > 1
    )
    assert split, "the test tree should have a file split over the missing device"
    assert sorted(f["path"] for f in last["incomplete"]) == split
    gone = [f for f, labs in holders.items() if labs == {missing_label}]
    assert last["unknown_file_ids"] <= len(gone)
    # a restore from the partial catalog gives every other file intact
    out = restore_tree(new, ids[1], tmp_path / "partial")
    assert out["damaged"] == []
    got = snapshot(restored_root(tmp_path / "partial", tree))
    want = snapshot(tree)
    assert got and all(want[k] == v for k, v in got.items())
    for p in split:
        assert os.path.relpath(p, tree) not in got


@pytest.mark.slow
def test_rebuild_refuses_to_overwrite_a_catalog(two_sets):
    _, devs, cat, _ = two_sets
    r = run_cli("rebuild-catalog", "-d", str(devs[0]), "--catalog", cat)
    assert r.code == 2
    assert f"{cat} exists; rebuild-catalog writes a new catalog only" in r.err


def test_damaged_record_is_left_out_and_named(two_sets, tmp_path):
    _, devs, _, ids = two_sets
    vol = sorted(devs[0].glob(f"sets/{ids[1]}/*.pbv"))[0]
    data = bytearray(vol.read_bytes())
    data[len(data) // 2] ^= 0x01
    vol.write_bytes(data)
    report = rebuild_catalog([str(d) for d in devs], str(tmp_path / "new.sqlite"))
    last = report.sets[-1]
    assert last["status"] == "degraded"
    assert last["damaged"] and last["incomplete"]


def test_hostile_paths_in_a_volume_do_not_escape_the_target(tmp_path, device_dirs):
    """A forged volume whose records name '..' paths and absolute paths elsewhere."""
    (dev,) = device_dirs(1)
    outside = tmp_path / "outside"
    outside.mkdir()
    label = "ab" * 16
    (dev / "label.json").write_text(json.dumps({"label": label, "created": "x", "kind": "file"}))
    set_id = bytes(range(16))
    vol = bytearray(
        VolumeHeader(
            set_id, bytes.fromhex(label), 1, 1, {"sources": ["/src"], "devices": 1}
        ).encode()
    )
    paths = [b"/src", f"/src/../../{outside}/evil".encode(), f"{outside}/abs".encode()]
    for fid, path in enumerate(paths):
        payload = b"" if fid == 0 else b"pwned"
        vol += (
            RecordHeader(
                "dir" if fid == 0 else "file",
                set_id,
                fid,
                0,
                len(payload),
                len(payload),
                0o100644 if fid else 0o40755,
                0,
                0,
                0,
                checksum(payload),
                path,
            ).encode()
            + payload
        )
    vol += end_record(set_id, len(paths)).encode()
    (dev / "sets" / set_id.hex()).mkdir(parents=True)
    (dev / "sets" / set_id.hex() / "forged-0001.pbv").write_bytes(vol)
    new = str(tmp_path / "new.sqlite")
    report = rebuild_catalog([str(dev)], new)
    assert report.sets[0]["status"] == "complete"
    target = tmp_path / "target"
    out = restore_tree(new, set_id.hex(), target)
    assert [d["path"] for d in out["damaged"]] == [os.fsdecode(paths[1])]
    assert os.listdir(outside) == []
    assert (target / str(outside).lstrip("/") / "abs").read_bytes() == b"pwned"
    shutil.rmtree(target)


def test_damaged_header_costs_one_record_not_the_rest_of_the_volume(two_sets, tmp_path):
    """Flip a byte in a record header mid-volume: the reader skips to the next intact one."""
    _, devs, cat, ids = two_sets
    vol = sorted(devs[0].glob(f"sets/{ids[1]}/*.pbv"))[0]
    with Catalog(cat) as catalog:
        refs = sorted(
            ((fid, ref) for fid, ref in catalog.records(ids[1]) if ref.volume.endswith(vol.name)),
            key=lambda w: w[1].position,
        )
        paths = {f.file_id: f.entry.path for f in catalog.files(ids[1])}
    fid, ref = refs[len(refs) // 2]
    data = bytearray(vol.read_bytes())
    data[ref.position + 30] ^= 0x10  # inside the file id field: only the CRC can tell
    vol.write_bytes(data)
    report = rebuild_catalog([str(d) for d in devs], str(tmp_path / "new.sqlite"))
    last = report.sets[-1]
    assert last["status"] == "degraded"
    assert any("skipped to the next intact record" in d["error"] for d in last["damaged"])
    with Catalog(str(tmp_path / "new.sqlite")) as catalog:
        rebuilt = {(f, r.position) for f, r in catalog.records(ids[1])}
    # every other record of the volume was still found
    assert {(f, r.position) for f, r in refs if (f, r.position) != (fid, ref.position)} <= rebuilt
    assert (fid, ref.position) not in rebuilt
    if ref.size:  # a file losing a payload record is named as incomplete
        assert paths[fid] in [f["path"] for f in last["incomplete"]] or last["unknown_file_ids"]


@pytest.mark.slow
def test_a_rebuilt_incremental_set_is_never_restored_as_whole(tmp_path, device_dirs):
    """An incremental set's volumes hold only the files it wrote (the rest it reused
    from its parent): rebuilt from the devices, it lists those only, and a restore of it
    says so (exit 3) instead of calling a partial tree restored; the parent set, rebuilt
    too, gives the rest."""
    tree = make_tree(tmp_path / "src", seed=23, files=20, max_size=50_000)
    devs = device_dirs(2)
    dargs = [a for d in devs for a in ("-d", str(d))]
    cat = str(tmp_path / "orig.sqlite")
    assert run_cli("backup", str(tree), *dargs, "--catalog", cat).code == 0
    (tree / "new.txt").write_text("written by the incremental set only\n")
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--incremental", "--json")
    assert r.code == 0 and r.json["kind"] == "incremental", r.out + r.err
    child = r.json["set"]
    new = str(tmp_path / "rebuilt.sqlite")
    assert run_cli("rebuild-catalog", *dargs, "--catalog", new).code == 3  # degraded
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", new, "--set", child, "--target", str(out), "--json")
    assert r.code == 3, r.out + r.err
    (note,) = r.json["skipped"]
    assert note["path"] == f"set {child}" and "restore its parent set" in note["error"]
    assert (restored_root(out, tree) / "new.txt").exists()
    # restoring from the original catalog is whole, and says nothing of the kind
    r = run_cli("restore", "--catalog", cat, "--set", child, "--target", str(tmp_path / "o2"))
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(tmp_path / "o2", tree)) == snapshot(tree)

"""Parity across devices end to end through the real CLI (REQUIREMENTS K1, K2): a set
written with ``--parity m`` restores whole and verifies as recoverable with any m of
its devices gone; more than m gone is reported damaged."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.redundancy.volume import WRITTEN_VERSION, read_parity_header

pytestmark = pytest.mark.slow


def dev_args(devs: list[Path]) -> list[str]:
    return [a for d in devs for a in ("--device", str(d))]


def _backup(tmp_path: Path, device_dirs, n: int, m: int, seed: int = 3):
    src = make_tree(tmp_path / "src", seed=seed, files=25, big=(2_500_000, 1_700_001))
    devs = device_dirs(n)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *dev_args(devs), "--catalog", cat, "--parity", str(m), "--json")
    assert r.code == 0, r.err
    assert r.json["parity"]["written"] == "while writing", r.json["parity"]
    return src, devs, cat, r.json


def _restore(tmp_path: Path, cat: str, name: str):
    out = tmp_path / name
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    return out, r


def test_parity_backup_puts_data_on_n_minus_m_devices_and_parity_on_the_rest(tmp_path, device_dirs):
    _src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    assert doc["status"] == "complete"
    assert [d["url"] for d in doc["devices"]] == [str(d) for d in devs[:3]]
    assert doc["parity"]["redundancy"] == 1 and doc["parity"]["k"] == 3
    assert doc["parity"]["devices"][0]["url"] == str(devs[3])
    assert not list((devs[3] / "sets").rglob("*.pbv"))
    (parity,) = list((devs[3] / "sets").rglob("*.pbp"))
    assert parity.read_bytes()[:6] == b"PBKP\x03\x00"  # version 3: written while writing
    assert parity.read_bytes()[-4:] == b"PBKE"
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    assert r.json["parity"] == {"k": 3, "m": 1, "redundancy": 1}


@pytest.mark.parametrize("lost", range(4))
def test_any_one_device_deleted_restores_whole_with_parity_one(tmp_path, device_dirs, lost):
    src, devs, cat, _doc = _backup(tmp_path, device_dirs, 4, 1, seed=lost)
    shutil.rmtree(devs[lost])
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "recoverable"
    assert [d["url"] for d in r.json["missing"]] == [str(devs[lost])]
    assert r.json["parity"]["redundancy"] == 0
    out, r = _restore(tmp_path, cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_any_two_of_five_devices_lost_restore_whole_with_parity_two(tmp_path, device_dirs):
    src, devs, cat, _doc = _backup(tmp_path, device_dirs, 5, 2)
    for i, pair in enumerate(itertools.combinations(range(5), 2)):
        hidden = [devs[j].rename(devs[j].with_name(devs[j].name + ".away")) for j in pair]
        out, r = _restore(tmp_path, cat, f"out{i}")
        assert r.json["status"] == "ok", (pair, r.out, r.err)
        assert snapshot(restored_root(out, src)) == snapshot(src), pair
        for j, path in zip(pair, hidden, strict=True):
            path.rename(devs[j])


def test_more_devices_lost_than_parities_is_damaged(tmp_path, device_dirs):
    _src, devs, cat, _doc = _backup(tmp_path, device_dirs, 4, 1)
    shutil.rmtree(devs[0])
    shutil.rmtree(devs[1])
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 1
    assert r.json["status"] == "damaged"
    assert {d["url"] for d in r.json["missing"]} == {str(devs[0]), str(devs[1])}


def test_a_truncated_volume_is_read_around(tmp_path, device_dirs):
    src, devs, cat, _doc = _backup(tmp_path, device_dirs, 4, 1)
    (vol,) = list((devs[1] / "sets").rglob("*.pbv"))
    with open(vol, "r+b") as fh:
        fh.truncate(vol.stat().st_size // 2)
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "recoverable", r.out + r.err
    assert r.json["missing"][0]["url"] == str(devs[1])
    out, r = _restore(tmp_path, cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


@pytest.mark.parametrize("lost", [1, 3])
def test_repair_rebuilds_a_deleted_device_onto_a_new_one(tmp_path, device_dirs, lost):
    """A data device (1) or the parity device (3) deleted: repair rebuilds its volumes
    byte for byte onto a new directory, labelled as the lost one, and the catalog finds
    it there; verify is ok again with every device."""
    src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    before = {p.relative_to(devs[lost]): p.read_bytes() for p in devs[lost].rglob("*.pb?")}
    label = (devs[lost] / "label.json").read_text()
    shutil.rmtree(devs[lost])
    new = tmp_path / "replacement"
    new.mkdir()
    r = run_cli("repair", "--set", doc["set"], "--device", str(new), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["status"] == "ok"
    after = {p.relative_to(new): p.read_bytes() for p in new.rglob("*.pb?")}
    assert after == before
    assert json.loads((new / "label.json").read_text())["label"] == json.loads(label)["label"]
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["status"] == "ok", r.out + r.err
    assert r.json["parity"]["redundancy"] == 1
    out, r = _restore(tmp_path, cat, "out")
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_repair_of_a_whole_set_does_nothing_and_a_set_without_parity_is_refused(
    tmp_path, device_dirs
):
    _src, _devs, cat, doc = _backup(tmp_path, device_dirs, 3, 1)
    r = run_cli(
        "repair", "--set", doc["set"], "--device", str(tmp_path / "new"), "--catalog", cat, "--json"
    )
    assert r.code == 0 and r.json["status"] == "nothing", r.out + r.err
    src2 = make_tree(tmp_path / "src2", seed=9, files=3)
    more = [tmp_path / "e1", tmp_path / "e2"]
    for d in more:
        d.mkdir()
    r = run_cli("backup", str(src2), *dev_args(more), "--catalog", cat, "--json")
    r = run_cli(
        "repair", "--set", r.json["set"], "--device", str(tmp_path / "new"), "--catalog", cat
    )
    assert r.code == 2 and "without --parity" in r.err


def test_repair_puts_back_a_damaged_volume_named_with_lost(tmp_path, device_dirs):
    """Bytes flipped inside a volume (same size): verify and restore find the damage and
    read around it (recoverable); repair with --lost rebuilds that device from the row
    digests and parity."""
    src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    (vol,) = list((devs[0] / "sets").rglob("*.pbv"))
    good = vol.read_bytes()
    body = bytearray(good)
    body[len(body) // 2] ^= 0xFF
    vol.write_bytes(bytes(body))
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "recoverable"
    assert r.json["damaged"] == []
    assert [d["url"] for d in r.json["missing"]] == [str(devs[0])]
    assert "damaged unit" in r.json["missing"][0]["error"]
    out, r = _restore(tmp_path, cat, "out")
    assert r.code == 3 and r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    label = json.loads((devs[0] / "label.json").read_text())["label"]
    new = tmp_path / "replacement"
    new.mkdir()
    r = run_cli(
        "repair",
        "--set",
        doc["set"],
        "--device",
        str(new),
        "--lost",
        label[:8],
        "--catalog",
        cat,
        "--json",
    )
    assert r.code == 0, r.out + r.err
    assert (new / vol.relative_to(devs[0])).read_bytes() == good
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err


def test_rebuild_catalog_reads_parity_and_a_missing_device_from_it(tmp_path, device_dirs):
    """The catalog lost, and a data device with it: rebuild-catalog reads the parity
    volumes' headers, decodes the missing device's volumes, and the rebuilt catalog
    restores every file and knows the set's parity (verify: recoverable)."""
    src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    with Catalog(cat) as c:
        stripe = c.parity(doc["set"])
    os.unlink(cat)
    shutil.rmtree(devs[2])
    new_cat = str(tmp_path / "rebuilt.sqlite")
    r = run_cli(
        "rebuild-catalog", *dev_args([devs[0], devs[1], devs[3]]), "--catalog", new_cat, "--json"
    )
    assert r.code in (0, 3), r.out + r.err
    (found,) = [s for s in r.json["sets"] if s["set"] == doc["set"]]
    assert found["parity"] == {"k": 3, "m": 1}
    assert found["incomplete"] == []
    with Catalog(new_cat) as c:  # the version-3 end records give the stripe back whole
        again = c.parity(doc["set"])
    keys = ("codec", "k", "m", "unit", "columns", "volumes", "rows", "created_ns", "version")
    assert {k: again[k] for k in keys} == {k: stripe[k] for k in keys}
    assert stripe["version"] == 3
    r = run_cli("verify", "--catalog", new_cat, "--json")
    assert r.json["status"] == "recoverable", r.out + r.err
    out, r = _restore(tmp_path, new_cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_plan_shows_parity_and_too_few_devices_is_a_usage_error(tmp_path, device_dirs):
    src = make_tree(tmp_path / "src", seed=2, files=10)
    devs = device_dirs(3)
    r = run_cli("plan", str(src), *dev_args(devs), "--parity", "1", "--json")
    assert r.code == 0, r.out + r.err
    assert [d["url"] for d in r.json["devices"]] == [str(d) for d in devs[:2]]
    assert r.json["parity"]["devices"] == [str(devs[2])]
    assert r.json["parity"]["bytes_each"] == max(d["bytes"] for d in r.json["devices"])
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *dev_args(devs), "--parity", "3", "--catalog", cat)
    assert r.code == 2 and "data devices" in r.err


def test_a_stream_backed_up_with_parity_restores_to_stdout_with_a_device_gone(
    tmp_path, device_dirs
):
    data = random.Random(4).randbytes(5_300_000)
    devs = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup",
        "-",
        "--stdin-name",
        "dump.sql",
        *dev_args(devs),
        "--parity",
        "1",
        "--catalog",
        cat,
        "--json",
        input=data,
    )
    assert r.code == 0, r.out + r.err
    assert r.json["parity"]["redundancy"] == 1
    holder = max(devs[:3], key=lambda d: sum(v.stat().st_size for v in d.rglob("*.pbv")))
    shutil.rmtree(holder)  # the device holding (most of) the stream
    full = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", "restore", "--stdout", "dump.sql", "--catalog", cat],
        capture_output=True,
        env=full,
        timeout=300,
    )
    assert proc.stdout == data, proc.stderr.decode()


def test_an_incremental_set_reads_its_reused_files_around_a_lost_device(tmp_path, device_dirs):
    """An incremental set reuses records from its parent's volumes: with a data device
    lost, those come back from the parent's parity, the new ones from the new set's."""
    src, devs, cat, _doc = _backup(tmp_path, device_dirs, 4, 1)
    (src / "file1.bin").write_bytes(random.Random(8).randbytes(1_500_000))
    r = run_cli(
        "backup",
        str(src),
        *dev_args(devs),
        "--catalog",
        cat,
        "--parity",
        "1",
        "--incremental",
        "--json",
    )
    assert r.code == 0, r.out + r.err
    assert r.json["kind"] == "incremental" and r.json["reused"] > 0
    shutil.rmtree(devs[1])
    out, r = _restore(tmp_path, cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_a_damaged_parity_volume_is_found_by_verify_and_repaired(tmp_path, device_dirs):
    """One byte flipped in a parity unit: verify names the parity device (the data is
    whole, the redundancy is gone); repair --lost rebuilds its volume byte for byte."""
    _src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    (vol,) = list((devs[3] / "sets").rglob("*.pbp"))
    good = vol.read_bytes()
    body = bytearray(good)
    body[len(body) - 1000] ^= 0x01  # inside the last row's parity unit
    vol.write_bytes(bytes(body))
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 3 and r.json["status"] == "recoverable", r.out + r.err
    assert [d["url"] for d in r.json["missing"]] == [str(devs[3])]
    assert r.json["parity"]["redundancy"] == 0
    label = json.loads((devs[3] / "label.json").read_text())["label"]
    new = tmp_path / "replacement"
    new.mkdir()
    r = run_cli(
        "repair",
        "--set",
        doc["set"],
        "--device",
        str(new),
        "--lost",
        label,
        "--catalog",
        cat,
        "--json",
    )
    assert r.code == 0, r.out + r.err
    assert (new / vol.relative_to(devs[3])).read_bytes() == good
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err


def test_failover_and_parity_in_one_run_then_a_survivor_lost(tmp_path, device_dirs):
    """A data device fails mid-backup (write error): its work goes to the others and the
    parity covers the surviving columns; then another data device is deleted and the
    set still restores whole. A parity device that fails leaves the set complete, with
    the report saying it has no redundancy (exit 3)."""
    src = make_tree(tmp_path / "src", seed=11, files=25, big=(2_500_000, 1_700_001))
    devs = device_dirs(5)
    cat = str(tmp_path / "cat.sqlite")
    urls = [
        str(devs[0]),
        f"faulty+file://{devs[1]}?fail_after=300K",
        str(devs[2]),
        str(devs[3]),
        str(devs[4]),
    ]
    r = run_cli("backup", str(src), *dev_args(urls), "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "degraded"
    assert r.json["parity"]["redundancy"] == 1 and r.json["parity"]["k"] == 3
    # the streamed rows summed the failed device's column too: written again after
    assert r.json["parity"]["written"] == "after the data"
    assert r.json["parity"]["why_after"] == "a data device failed during the backup"
    # written after the data, in the version written while writing (XXH3-128 digests)
    with Catalog(cat) as c:
        stripe = c.parity(r.json["set"])
    (volume,) = stripe["parity"]
    with open(devs[4] / volume["name"], "rb") as fh:
        header = read_parity_header(fh)
    assert stripe["version"] == header.version == WRITTEN_VERSION == 3
    shutil.rmtree(devs[2])
    out, r = _restore(tmp_path, cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)

    more = device_dirs_at(tmp_path / "second", 3)
    urls = [str(more[0]), str(more[1]), f"faulty+file://{more[2]}?fail_after=100K"]
    r = run_cli("backup", str(src), *dev_args(urls), "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "complete", [
        (d["status"], d.get("error")) for d in r.json["devices"]
    ]
    assert r.json["parity"]["redundancy"] == 0 and "parity not written" in r.json["parity"]["error"]


def device_dirs_at(root: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = root / f"dev{i}"
        d.mkdir(parents=True)
        out.append(d)
    return out


def test_prune_keeps_parity_while_its_records_are_read_and_never_compacts_a_parity_set(
    tmp_path, device_dirs
):
    """An incremental set reads unchanged files from its forgotten parent's volumes, and
    the parent's parity still covers them: prune keeps those parity volumes and does not
    compact the parent's partly used volumes (the rows cover their bytes as written),
    so a lost data device is still read around. Once nothing reads the parent, its parity
    volumes go too."""
    src = make_tree(tmp_path / "src", seed=11, files=25, big=(2_500_000, 1_700_001))
    devs = device_dirs(4)
    cat = str(tmp_path / "cat.sqlite")
    ids = []
    for night in range(2):
        if night:  # change a few files: the parent's volumes become partly used
            for p in sorted(x for x in src.rglob("*") if x.is_file())[:5]:
                p.write_bytes(os.urandom(3000))
        r = run_cli("backup", str(src), *dev_args(devs), "--catalog", cat, "--parity", "1",
                    "--incremental", "--time", f"2026-03-0{night + 1}T02:00:00+00:00",
                    "--json")  # fmt: skip
        assert r.code == 0, r.err
        ids.append(r.json["set"])
    assert run_cli("forget", "--keep-last", "1", "--catalog", cat).code == 0
    parent_parity = list((devs[3] / "sets" / ids[0]).glob("*.pbp"))
    parent_data = sorted(p for d in devs[:3] for p in (d / "sets" / ids[0]).glob("*.pbv"))
    assert parent_parity and parent_data
    r = run_cli("prune", "--max-unused", "0", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert all(p.exists() for p in parent_parity)
    assert not any(v["action"] == "compact" for v in r.json["volumes"])
    shutil.rmtree(devs[0])
    out, r = _restore(tmp_path, cat, "out")
    assert r.json["status"] == "ok", r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    # a full set that reads nothing of the parent: the parent's parity is garbage now
    devs[0].mkdir()
    r = run_cli("backup", str(src), *dev_args(devs), "--catalog", cat, "--parity", "1",
                "--time", "2026-03-03T02:00:00+00:00", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert run_cli("forget", "--keep-last", "1", "--catalog", cat).code == 0
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code in (0, 3), r.out + r.err
    assert not any(p.exists() for p in parent_parity)


def test_parity_written_after_the_data_rebuilds_the_catalog_and_repairs_a_lost_device(
    tmp_path, device_dirs
):
    """Version-3 parity written after the data (a data device failed mid-backup): with
    the catalog and a surviving data device lost, rebuild-catalog gives the stripe back
    as written (version 3), repair rebuilds the lost device onto an empty one from it,
    and the set verifies whole again."""
    src = make_tree(tmp_path / "src", seed=12, files=25, big=(2_500_000, 1_700_001))
    devs = device_dirs(5)
    cat = str(tmp_path / "cat.sqlite")
    urls = [str(devs[0]), f"faulty+file://{devs[1]}?fail_after=300K", *map(str, devs[2:])]
    r = run_cli("backup", str(src), *dev_args(urls), "--catalog", cat, "--parity", "1", "--json")
    assert r.code == 3, r.out + r.err
    assert r.json["parity"]["written"] == "after the data"
    set_hex = r.json["set"]
    with Catalog(cat) as c:
        stripe = c.parity(set_hex)
    assert stripe["version"] == 3
    os.unlink(cat)
    shutil.rmtree(devs[2])
    new_cat = str(tmp_path / "rebuilt.sqlite")
    survivors = [devs[0], devs[1], devs[3], devs[4]]
    r = run_cli("rebuild-catalog", *dev_args(survivors), "--catalog", new_cat, "--json")
    assert r.code in (0, 3), r.out + r.err
    (found,) = [s for s in r.json["sets"] if s["set"] == set_hex]
    assert found["parity"] == {"k": 3, "m": 1}
    with Catalog(new_cat) as c:
        again = c.parity(set_hex)
    keys = ("codec", "k", "m", "unit", "columns", "volumes", "rows", "created_ns", "version")
    assert {k: again[k] for k in keys} == {k: stripe[k] for k in keys}
    r = run_cli("verify", "--catalog", new_cat, "--json")
    assert r.json["status"] == "recoverable", r.out + r.err
    new = tmp_path / "replacement"
    new.mkdir()
    r = run_cli("repair", "--set", set_hex, "--device", str(new), "--catalog", new_cat, "--json")
    assert r.code == 0, r.out + r.err
    r = run_cli("verify", "--catalog", new_cat, "--json")
    assert r.json["status"] == "ok", r.out + r.err
    shutil.rmtree(devs[4])  # the parity device now: the repaired data stands on its own
    out, r = _restore(tmp_path, new_cat, "out")
    assert r.json["status"] in ("ok", "degraded"), r.out + r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_every_devices_catalog_copy_holds_the_sets_parity(tmp_path, device_dirs):
    """The streamed parity is recorded before the set's catalog copy is made, so the one
    copy put on every device, data and parity alike, holds the stripe (the data devices'
    copies were made before it, without it, and the parity devices' after, a second copy)."""
    _src, devs, cat, doc = _backup(tmp_path, device_dirs, 4, 1)
    with Catalog(cat) as c:
        stripe = c.parity(doc["set"])
    assert stripe is not None and stripe["k"] == 3
    copies = [d / "catalog" / "catalog.sqlite" for d in devs]
    for copy in copies:
        scratch = tmp_path / f"copy-{copy.parent.parent.name}.sqlite"
        shutil.copyfile(copy, scratch)  # opened writable: never the device's own file
        with Catalog(str(scratch)) as c:
            assert c.parity(doc["set"]) == stripe, copy
    assert len({p.read_bytes() for p in copies}) == 1  # one copy, the same everywhere

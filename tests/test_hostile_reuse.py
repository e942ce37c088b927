"""An incremental backup never lists bytes its devices no longer hold (hostile8).

A volume of an earlier set deleted or cut short on its device (by hand, a bucket's
lifecycle rule, a disk image restored from before) used to be reused on the catalog's
word: every later incremental set pointed at the lost bytes, said ``complete`` with exit
0, and only a ``verify`` found it damaged. Now the run lists the earlier sets' volumes it
would reuse, copies again the files held by one that is gone or too short, names it
(``backup --json`` "lacking", exit 3), and the new set verifies and restores whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot

pytestmark = pytest.mark.slow  # several real backups, restores and verifies


def _backup(tree: Path, urls: list[str], cat: str, *extra: str):
    args = [a for u in urls for a in ("-d", str(u))]
    return run_cli("backup", str(tree), *args, "--catalog", cat, "--json", *extra)


def _volumes(dev: Path) -> list[Path]:
    return sorted((dev / "sets").rglob("*.pbv"))


def _restores_exactly(tmp_path: Path, cat: str, set_id: str, tree: Path) -> None:
    out = tmp_path / f"out-{set_id[:8]}"
    r = run_cli("restore", "--set", set_id, "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)


@pytest.mark.parametrize("fault", ["deleted", "cut short"])
def test_a_volume_gone_from_its_device_is_not_reused(tmp_path, device_dirs, fault):
    tree = make_tree(tmp_path / "src", seed=11, files=30, max_size=200_000, big=(2_000_000,))
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = _backup(tree, devs, cat)
    assert r.code == 0, r.err
    first = r.json["set"]
    (volume,) = _volumes(devs[0])
    if fault == "deleted":
        volume.unlink()
    else:
        os.truncate(volume, volume.stat().st_size // 2)
    (tree / "new.txt").write_text("a file made after the first set\n")
    r = _backup(tree, devs, cat, "--incremental")
    assert r.code == 3, (r.out, r.err)  # before: 0, and the set pointed at the lost bytes
    doc = r.json
    assert doc["status"] == "complete" and doc["kind"] == "incremental"
    name = str(volume.relative_to(devs[0]))
    assert [v["volume"] for v in doc["lacking"]] == [name], doc
    assert str(devs[0]) in doc["lacking"][0]["error"]
    assert name in r.err  # the text says it too
    assert 0 < doc["reused"] < sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
    second = doc["set"]
    r = run_cli("verify", "--set", second, "--catalog", cat)
    assert r.code == 0, r.out + r.err  # before: damaged, naming the files of the lost volume
    _restores_exactly(tmp_path, cat, second, tree)
    r = run_cli("verify", "--set", first, "--catalog", cat)
    assert r.code == 1  # the earlier set is damaged, and says so
    # the next incremental set finds nothing lacking: it reuses the second set's copies
    r = _backup(tree, devs, cat, "--incremental")
    assert r.code == 0, r.err
    assert "lacking" not in r.json


def test_an_object_deleted_from_an_s3_device_is_not_reused(tmp_path, device_dirs, s3_server):
    tree = make_tree(tmp_path / "src", seed=12, files=20, max_size=200_000, big=(1_500_000,))
    (disk,) = device_dirs(1)
    bucket = s3_server.bucket("lacking")
    urls = [str(disk), s3_server.url(bucket, "dev")]
    cat = str(tmp_path / "cat.sqlite")
    r = _backup(tree, urls, cat)
    assert r.code == 0, r.err
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    (key,) = [k for k in keys if k.endswith(".pbv")]
    client.delete_object(Bucket=bucket, Key=key)  # a lifecycle rule, a careless hand
    (tree / "new.txt").write_text("made after the first set\n")
    r = _backup(tree, urls, cat, "--incremental")
    assert r.code == 3, (r.out, r.err)
    assert [v["volume"] for v in r.json["lacking"]] == [key.removeprefix("dev/")]
    second = r.json["set"]
    r = run_cli("verify", "--set", second, "--catalog", cat)
    assert r.code == 0, r.out + r.err
    _restores_exactly(tmp_path, cat, second, tree)

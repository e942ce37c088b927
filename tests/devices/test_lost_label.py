"""A device whose label.json was deleted is never relabelled silently (issue 11).

Before, the next backup wrote a new label on it, and the sets it already held could no
longer be restored through the catalog (which knows the device by its old label). Now
the backup refuses that device with a message naming it and ``parbackup relabel``, which
writes back the SAME label, read from the volume headers; restore and verify find the
device by that label meanwhile, without writing to it.
"""

from __future__ import annotations

import json

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset


@pytest.mark.slow
def test_lost_label_is_not_replaced_and_can_be_put_back(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=31, files=25, big=(900_000,))
    d0, d1 = device_dirs(2)
    devs = ["-d", str(d0), "-d", str(d1)]
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    first_set = r.json["set"]
    old = json.loads((d0 / "label.json").read_text())["label"]
    (d0 / "label.json").unlink()

    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err  # the other device took the backup
    failed = [d for d in r.json["devices"] if d["status"] != "ok"]
    assert len(failed) == 1 and str(d0) in failed[0]["url"]
    assert "relabel" in r.out and str(d0) in r.out
    assert not (d0 / "label.json").exists()  # not relabelled

    # the first set still restores and verifies through the catalog (read-only)
    r = run_cli("verify", "--catalog", cat, "--set", first_set, "--json")
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--set", first_set)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    assert not (d0 / "label.json").exists()

    r = run_cli("relabel", str(d0), "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["label"] == old
    assert json.loads((d0 / "label.json").read_text())["label"] == old
    r = run_cli("relabel", str(d0))
    assert r.code == 1 and "already has a label" in r.err

    r = run_cli("backup", str(tree), *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert [d["status"] for d in r.json["devices"]] == ["ok", "ok"]


def test_relabel_needs_volumes(tmp_path, device_dirs):
    (d0,) = device_dirs(1)
    r = run_cli("relabel", str(d0))
    assert r.code == 1 and "no readable volume" in r.err
    assert not (d0 / "label.json").exists()


def test_relabel_refuses_volumes_of_two_devices(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=32, files=12, big=(600_000,))
    d0, d1 = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    (d0 / "label.json").unlink()
    stray = next((d1 / "sets").rglob("*.pbv"))  # another device's volume, copied over
    (d0 / "sets" / stray.parent.name / f"zz-{stray.name}").write_bytes(stray.read_bytes())
    r = run_cli("relabel", str(d0))
    assert r.code == 1 and "different labels" in r.err, r.out + r.err
    assert not (d0 / "label.json").exists()

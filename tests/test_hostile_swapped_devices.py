"""Two devices that swapped places (disks mounted the other way round) are recognised by
their labels (REQUIREMENTS D4; hostile8): verify and restore find each where the other
was, without ``-d``. Before, both were "now holds another device" and every set was
called damaged (exit 1) until each device was named with ``-d``."""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot

pytestmark = pytest.mark.slow  # backups, verifies and restores through the CLI


def test_devices_that_swapped_places_are_found_by_their_labels(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=21, files=30, max_size=200_000, big=(1_500_000,))
    d0, d1 = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    held = {d: sorted(p.name for p in d.rglob("*.pbv")) for d in (d0, d1)}
    assert all(held.values())  # both hold a share
    spare = tmp_path / "spare"
    d0.rename(spare)
    d1.rename(d0)
    spare.rename(d1)
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err  # before: damaged, exit 1
    target = tmp_path / "r"
    r = run_cli("restore", "--catalog", cat, "--target", str(target))
    assert r.code == 0, r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)
    # one of them gone: the other is still found, the lost one named with why
    d0.rename(spare)
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 1
    assert f"{d1} now holds another device" in r.out + r.err, r.out + r.err


def test_prune_reclaims_on_devices_that_swapped_places(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=22, files=20, max_size=200_000)
    big = tree / "big.bin"
    d0, d1 = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    ids = []
    for night in (1, 2):
        big.write_bytes(bytes([night]) * 1_500_000)  # other bytes each night
        r = run_cli("backup", str(tree), "-d", str(d0), "-d", str(d1), "--catalog", cat, "--json")
        assert r.code == 0, r.err
        ids.append(r.json["set"])
    r = run_cli("forget", "--keep-last", "1", "--catalog", cat, "--json")
    assert r.json["forgotten"] == ids[:1], r.out
    spare = tmp_path / "spare"
    d0.rename(spare)
    d1.rename(d0)
    spare.rename(d1)
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err  # before: exit 3, both devices "unreachable"
    left = {p.parent.name for d in (d0, d1) for p in d.rglob("*.pbv")}
    assert left == {ids[1]}, left
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err

"""A first end-to-end check: back up a tree onto three directories, restore, compare."""

from conftest import restored_root, run_cli, snapshot


def test_backup_restore_roundtrip(tmp_path, tree, device_dirs):
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 0, r.err
    assert snapshot(restored_root(tmp_path / "out", tree)) == snapshot(tree)

"""Restore names every file the set lists but does not hold, and exits 3 (issue 11).

A file that changed while it was read (``inconsistent``) or vanished before it was read
(``skipped``) is in the set's file list but has no data in it. Restoring the set used to
leave such files out without a word (exit 0): a user could not tell the tree was not
whole.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import make_tree, restored_root, run_cli
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.progress import Started


@pytest.mark.slow
def test_restore_names_files_the_set_does_not_hold(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=7, files=10)
    changed, gone = tree / "changed.bin", tree / "gone.bin"
    changed.write_bytes(os.urandom(200_000))
    gone.write_bytes(os.urandom(100_000))
    devs = [str(d) for d in device_dirs(2)]
    cat = str(tmp_path / "cat.sqlite")

    def on_event(event) -> None:
        if isinstance(event, Started):  # scanned, nothing read yet
            changed.write_bytes(os.urandom(200_000))  # same size, new mtime and ctime
            os.utime(changed, ns=(1, 1))
            gone.unlink()

    with Catalog(cat) as catalog:
        report = run_backup([str(tree)], devs, catalog, on_event=on_event)
    assert report.status == "complete"
    assert [s.path for s in report.inconsistent] == [str(changed)]
    assert [s.path for s in report.skipped] == [str(gone)]

    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    doc = r.json
    named = {d["path"]: d["error"] for d in doc["skipped"]}
    assert set(named) == {str(changed), str(gone)}
    assert "changed while it was backed up" in named[str(changed)]
    assert "could not be read" in named[str(gone)]
    root = restored_root(out, tree)
    assert (root / "file0.bin").exists()
    assert not (root / "changed.bin").exists() and not (root / "gone.bin").exists()

    # human output names them too; a selection that leaves them out is clean (exit 0)
    r = run_cli("restore", "--target", str(tmp_path / "o2"), "--catalog", cat)
    assert r.code == 3 and str(changed) in r.out + r.err and str(gone) in r.out + r.err
    r = run_cli(
        "restore",
        "--target",
        str(tmp_path / "o3"),
        "--catalog",
        cat,
        "--include",
        str(tree / "file0.bin"),
        "--json",
    )
    assert r.code == 0 and "skipped" not in json.loads(r.out), r.out + r.err
    # asked for by name, it is named as not held (exit 3), not "matches nothing"
    r = run_cli(
        "restore", "--target", str(tmp_path / "o4"), "--catalog", cat,
        "--include", str(changed), "--json",
    )  # fmt: skip
    assert r.code == 3, r.out + r.err
    assert [d["path"] for d in json.loads(r.out)["skipped"]] == [str(changed)]

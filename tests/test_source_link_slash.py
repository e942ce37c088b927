"""``backup LINK/`` backs up the directory the symlink points to, recorded under LINK.

POSIX path resolution (and tar, rsync) read ``LINK/`` as the directory LINK names; a
source given so used to be stored as the symlink alone: "files: 1", exit 0, and not one
byte of the tree it named. Without the slash the link itself is still the entry.
"""

from __future__ import annotations

import os

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot


@pytest.mark.slow
def test_a_source_link_with_a_slash_is_the_tree_it_names(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "real", seed=5, files=15, max_size=50_000)
    link = tmp_path / "link"
    os.symlink(tree, link)
    cat = str(tmp_path / "cat.sqlite")
    devs = [a for d in device_dirs(2) for a in ("-d", str(d))]
    r = run_cli("backup", f"{link}/", *devs, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["files"] == len(snapshot(tree)) + 1  # the tree and its root
    out = tmp_path / "out"
    assert run_cli("restore", "--target", str(out), "--catalog", cat).code == 0
    back = restored_root(out, tmp_path) / "link"  # recorded under the link's own path
    assert not back.is_symlink() and snapshot(back) == snapshot(tree)
    # an incremental run of the same source reuses every file
    r = run_cli("backup", f"{link}/", *devs, "--catalog", cat, "--incremental", "--json")
    assert r.code == 0 and r.json["bytes"] == 0, r.out + r.err
    # without the slash the link itself is the one entry, as before
    r = run_cli("backup", str(link), *devs, "--catalog", cat, "--json")
    assert r.code == 0 and r.json["files"] == 1, r.out + r.err

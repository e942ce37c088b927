"""A crafted catalog or target never makes restore write outside --target (readback/paths.py)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from conftest import make_tree, run_cli
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.select import SHARED_PATH


@pytest.fixture
def setup(tmp_path, device_dirs):
    """A backed-up tree, an 'outside' directory that must stay untouched, the catalog."""
    tree = make_tree(tmp_path / "src", seed=3, files=10, max_size=5000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep me")
    cat = str(tmp_path / "cat.sqlite")
    with Catalog(cat) as catalog:
        assert run_backup([str(tree)], [str(d) for d in device_dirs(2)], catalog).status == (
            "complete"
        )
    return tree, outside, cat


def tamper(cat: str, sql: str, *args) -> None:
    db = sqlite3.connect(cat)
    with db:
        db.execute(sql, args)
    db.close()


def file_ids(cat: str, kind: str) -> list[int]:
    db = sqlite3.connect(cat)
    rows = db.execute(
        "SELECT file_id FROM files WHERE kind=? AND size>0 ORDER BY file_id"
        if kind == "file"
        else "SELECT file_id FROM files WHERE kind=? ORDER BY file_id",
        (kind,),
    ).fetchall()
    db.close()
    return [r[0] for r in rows]


def emptied(cat: str, fid: int) -> None:
    """Make a file entry empty (size 0, no records), so its path can be crafted freely: a
    file with data must agree with its records' headers, which a crafted catalog cannot
    change (tests/test_damaged_catalog.py); a crafted volume can, and then a rebuilt
    catalog carries its paths."""
    tamper(cat, "UPDATE files SET size=0 WHERE file_id=?", fid)
    tamper(cat, "DELETE FROM records WHERE file_id=?", fid)


def restore(cat: str, target: Path, overwrite: bool = False):
    with Catalog(cat) as catalog:
        return run_restore(catalog, RestoreOptions(target=str(target), overwrite=overwrite))


def untouched(outside: Path) -> bool:
    return (
        sorted(os.listdir(outside)) == ["precious"]
        and (outside / "precious").read_bytes() == b"keep me"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "/../../{outside}/escaped",
        "/a/b/../../../../{outside}/escaped",
        "{outside}/../outside/escaped",
        "relative/escaped",
        "/a/./escaped",
        "/a//escaped",
        "/a/nul\0/escaped",
    ],
)
def test_unsafe_paths_are_refused(setup, tmp_path, bad):
    _, outside, cat = setup
    fid = file_ids(cat, "file")[0]
    path = bad.format(outside=str(outside).lstrip("/")).encode()
    tamper(cat, "UPDATE files SET path=? WHERE file_id=?", path, fid)
    report = restore(cat, tmp_path / "out")
    assert [d["path"].encode("utf-8", "surrogateescape") for d in report.damaged] == [path]
    assert "refusing" in report.damaged[0]["error"]
    assert untouched(outside)
    assert report.files > 5  # everything else was restored


def test_absolute_path_outside_the_source_stays_inside_the_target(setup, tmp_path):
    _, outside, cat = setup
    fid = file_ids(cat, "file")[0]
    victim = outside / "precious"
    emptied(cat, fid)
    tamper(cat, "UPDATE files SET path=? WHERE file_id=?", str(victim).encode(), fid)
    report = restore(cat, tmp_path / "out", overwrite=True)
    assert report.damaged == []
    assert (tmp_path / "out" / str(victim).lstrip("/")).is_file()
    assert untouched(outside)


def test_restored_symlink_is_never_written_through(setup, tmp_path):
    """A symlink entry pointing outside, and a file entry below it / at the same path."""
    tree, outside, cat = setup
    link_id = file_ids(cat, "symlink")[0]
    a, b = file_ids(cat, "file")[:2]
    emptied(cat, a)
    emptied(cat, b)
    evil = str(tree / "evil")
    tamper(
        cat,
        "UPDATE files SET path=?, link=? WHERE file_id=?",
        evil.encode(),
        str(outside).encode(),
        link_id,
    )
    tamper(cat, "UPDATE files SET path=? WHERE file_id=?", (evil + "/precious").encode(), a)
    link2 = file_ids(cat, "symlink")[1]
    same = str(tree / "same")
    tamper(
        cat,
        "UPDATE files SET path=?, link=? WHERE file_id=?",
        same.encode(),
        str(outside / "precious").encode(),
        link2,
    )
    tamper(cat, "UPDATE files SET path=? WHERE file_id=?", same.encode(), b)
    report = restore(cat, tmp_path / "out")
    assert untouched(outside)
    out = tmp_path / "out" / str(tree).lstrip("/")
    assert (out / "evil").is_dir() and not (out / "evil").is_symlink()
    assert (out / "evil" / "precious").is_file()
    errors = {d["path"]: d["error"] for d in report.damaged}
    assert errors == {evil: "a directory is in the way", same: SHARED_PATH}
    # a symlink and a file under one path: neither is made (which is right is unknown)
    assert not os.path.lexists(out / "same")


def test_symlink_already_in_the_target_is_not_followed(setup, tmp_path):
    tree, outside, cat = setup
    target = tmp_path / "out"
    parent = target / str(tree.parent).lstrip("/")
    parent.mkdir(parents=True)
    os.symlink(outside, parent / tree.name)  # TARGET/<...>/src -> outside
    report = restore(cat, target, overwrite=True)
    assert untouched(outside)
    assert report.damaged and all("symlink" in d["error"] for d in report.damaged)


def test_a_target_that_is_a_symlink_to_a_missing_path_is_named_and_nothing_made(setup, tmp_path):
    """A dangling symlink as --target (or above it) is refused naming the link, with
    nothing made at either end; a symlink to a directory is followed, as ever."""
    tree, _outside, cat = setup
    missing = tmp_path / "missing" / "deeper"
    link = tmp_path / "link"
    os.symlink(missing, link)
    for target in (link, link / "sub"):
        r = run_cli("restore", "--target", str(target), "--catalog", cat)
        assert r.code == 1 and r.err.count("\n") == 1, r.err
        assert f"{link} " in r.err and f"symlink to a missing path ({missing})" in r.err
        assert not (tmp_path / "missing").exists() and os.readlink(link) == str(missing)
    missing.mkdir(parents=True)
    r = run_cli("restore", "--target", str(link), "--catalog", cat)
    assert r.code == 0, r.err
    assert (missing / str(tree).lstrip("/")).is_dir() and os.path.islink(link)


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        (
            "UPDATE records SET size=1125899906842624, header_size=1099511627776 WHERE file_id=?",
            "catalog record sizes are out of range",
        ),
        ("UPDATE files SET size=1125899906842624 WHERE file_id=?", "File too large"),
    ],
)
def test_crafted_sizes_do_not_allocate(setup, tmp_path, sql, error):
    _, outside, cat = setup
    fid = file_ids(cat, "file")[0]
    tamper(cat, sql, fid)
    report = restore(cat, tmp_path / "out")
    assert len(report.damaged) == 1
    assert error in report.damaged[0]["error"]
    assert untouched(outside)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("UPDATE files SET kind='weird' WHERE file_id=?", "unknown kind 'weird'"),
        ("UPDATE files SET path=10000000000 WHERE file_id=?", "a path is stored as int"),
    ],
)
def test_crafted_catalog_values_give_a_clear_error(setup, tmp_path, sql, error):
    _, outside, cat = setup
    tamper(cat, sql, file_ids(cat, "file")[0])
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 1
    assert error in r.err and "Traceback" not in r.err
    assert untouched(outside)


@pytest.mark.parametrize("volume", ["../../outside/precious", "/etc/passwd", "sets/../../x"])
def test_crafted_volume_names_are_refused(setup, tmp_path, volume):
    _, outside, cat = setup
    fid = file_ids(cat, "file")[0]
    tamper(
        cat,
        "INSERT INTO volumes (label, name) SELECT v.label, ? FROM records r"
        " JOIN volumes v ON v.num = r.vol WHERE r.file_id=? LIMIT 1",
        volume,
        fid,
    )
    tamper(cat, "UPDATE records SET vol=(SELECT MAX(num) FROM volumes) WHERE file_id=?", fid)
    report = restore(cat, tmp_path / "out")
    assert len(report.damaged) == 1 and "bad object name" in report.damaged[0]["error"]
    assert untouched(outside)

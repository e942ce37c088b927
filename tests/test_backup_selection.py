"""Selection at backup time, end to end through the CLI on real trees (issue 14, M3):
--exclude/--exclude-file, --exclude-if-present, --exclude-caches, --one-file-system, and
the devices and catalog inside a source left out on their own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from fsfixtures import tmpfs_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # end to end, real processes: not in the quick subset

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def devs(tmp_path: Path, n: int = 2) -> list[str]:
    out = []
    for i in range(n):
        d = tmp_path / f"dev{i}"
        d.mkdir(parents=True)
        out += ["-d", str(d)]
    return out


def set_paths(cat: str, set_ref: str = "latest") -> set[str]:
    r = run_cli("files", "--set", set_ref, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    return {f["path"] for f in r.json["files"]}


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_excludes_leave_paths_out_and_do_not_enter_directories(tmp_path):
    src = make_tree(tmp_path / "src", seed=3, files=20)
    write(src / "a.log", b"log")
    write(src / "sub" / "b.log", b"log")
    for i in range(30):  # one excluded directory with many entries
        write(src / "sub" / "node_modules" / f"m{i}" / "index.js")
    write(src / "build" / "out.o")  # a directory named build: excluded by build/
    write(src / "sub" / "build", b"a file named build stays")  # build/ is directories only
    write(src / "deep" / "x" / "y" / "skip.bin")
    write(src / "deep" / "keep.bin")
    write(src / "private" / "secret.txt")
    exclude_file = tmp_path / "excludes"
    exclude_file.write_text(f"# comments and blank lines are ignored\n\n{src}/private\n")
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(src), *devs(tmp_path), "--catalog", cat, "--json",
        "--exclude", "*.log", "--exclude", "node_modules/", "--exclude", "build/",
        "--exclude", "**/deep/**/skip.bin", "--exclude-file", str(exclude_file),
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["excluded"] == {
        "--exclude *.log": 2,
        "--exclude node_modules/": 1,  # one directory, never entered: its 60 entries unseen
        "--exclude build/": 1,
        "--exclude **/deep/**/skip.bin": 1,
        f"--exclude {src}/private": 1,
    }
    paths = set_paths(cat)
    for gone in ("a.log", "sub/b.log", "sub/node_modules", "build", "deep/x/y/skip.bin",
                 "private"):  # fmt: skip
        assert not any(p == f"{src}/{gone}" or p.startswith(f"{src}/{gone}/") for p in paths)
    for kept in ("sub/build", "deep/keep.bin", "deep/x/y"):
        assert f"{src}/{kept}" in paths
    # what comes back is the tree minus the excluded paths, byte for byte
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    for gone in ("a.log", "sub/b.log", "sub/node_modules", "build", "deep/x/y/skip.bin",
                 "private"):  # fmt: skip
        target = src / gone
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_exclude_if_present_and_caches_check_the_tag(tmp_path):
    src = tmp_path / "src"
    write(src / "keep" / "f")
    write(src / "tagged" / ".nobackup", b"")
    write(src / "tagged" / "inner" / "f")
    write(src / "cache" / "CACHEDIR.TAG", SIGNATURE + b"\n# a cache directory tag\n")
    write(src / "cache" / "blob")
    write(src / "nested" / "cache" / "CACHEDIR.TAG", SIGNATURE)  # exactly the signature
    write(src / "nested" / "cache" / "blob")
    write(src / "badsig" / "CACHEDIR.TAG", SIGNATURE[:-1] + b"6")  # wrong signature: kept
    write(src / "shortsig" / "CACHEDIR.TAG", SIGNATURE[:20])  # truncated: kept
    (src / "dirtag" / "CACHEDIR.TAG").mkdir(parents=True)  # not a file: kept
    os.symlink(src / "cache" / "CACHEDIR.TAG", src / "keep" / "CACHEDIR.TAG")  # symlink: kept
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(src), *devs(tmp_path), "--catalog", cat, "--json",
        "--exclude-if-present", ".nobackup", "--exclude-caches",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["excluded"] == {"--exclude-caches": 2, "--exclude-if-present .nobackup": 1}
    rel = {p[len(str(src)) :] for p in set_paths(cat)}
    assert rel == {
        "", "/keep", "/keep/f", "/keep/CACHEDIR.TAG", "/nested",
        "/badsig", "/badsig/CACHEDIR.TAG", "/shortsig", "/shortsig/CACHEDIR.TAG",
        "/dirtag", "/dirtag/CACHEDIR.TAG",
    }  # fmt: skip
    # without the options every one of them is backed up
    r = run_cli("backup", str(src), *devs(tmp_path / "again"), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["excluded"] == {}
    assert f"{src}/tagged/inner/f" in set_paths(cat) and f"{src}/cache/blob" in set_paths(cat)


def test_one_file_system_does_not_enter_a_mount(tmp_path, tmpfs):
    src = tmp_path / "src"
    write(src / "here.txt")
    mnt = tmpfs("src/mnt", "4m")
    write(mnt / "there.txt", b"on another filesystem")
    write(mnt / "d" / "deeper.txt")
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), *devs(tmp_path), "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert f"{mnt}/there.txt" in set_paths(cat), "without the option the mount is backed up"
    r = run_cli(
        "backup", str(src), *devs(tmp_path / "b"), "--catalog", cat, "--json",
        "--one-file-system",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["excluded"] == {"--one-file-system": 1}
    paths = set_paths(cat)
    assert str(mnt) in paths, "the mount point itself is kept, empty"
    assert f"{src}/here.txt" in paths
    assert not any(p.startswith(f"{mnt}/") for p in paths)
    r = run_cli("plan", str(src), *devs(tmp_path / "p"), "--one-file-system", "--json")
    assert r.code == 0, r.err
    assert r.json["excluded"]["paths"] == [{"path": f"{mnt}/", "rule": "--one-file-system"}]


def test_a_device_and_the_catalog_inside_the_source_are_left_out(tmp_path):
    src = make_tree(tmp_path / "src", seed=5, files=15)
    inner = src / "backups" / "disk0"  # a device directory inside the source
    inner.mkdir(parents=True)
    outer = tmp_path / "disk1"
    outer.mkdir()
    cat = str(src / "catalog.sqlite")  # and the catalog too
    args = ("backup", str(src), "-d", str(inner), "-d", str(outer), "--catalog", cat, "--json")
    first = run_cli(*args)
    assert first.code == 0, first.err
    assert f"left out {inner}: backup device {inner} inside a source" in first.err
    second = run_cli(*args)
    assert second.code == 0, second.err
    assert "left out" in second.err and "the catalog inside a source" in second.err
    assert second.json["bytes"] <= first.json["bytes"], "the second set is not larger"
    assert second.json["excluded"][f"automatic: backup device {inner}"] == 1
    assert second.json["excluded"]["automatic: the catalog"] >= 1
    for set_id in (first.json["set"], second.json["set"]):
        paths = set_paths(cat, set_id)
        assert not any(p == str(inner) or p.startswith(f"{inner}/") for p in paths)
        assert not any(p.startswith(cat) for p in paths)
        assert f"{src}/backups" in paths  # only the device itself is left out
    # and the set restores the tree minus the device and the catalog
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err
    restored = snapshot(restored_root(out, src))
    expected = {
        k: v
        for k, v in snapshot(src).items()
        if not k.startswith("backups/disk0") and not k.startswith("catalog.sqlite")
    }
    assert restored == expected


def test_the_readers_lock_file_beside_a_catalog_in_the_source_is_left_out(tmp_path):
    """A verify or restore leaves <catalog>.readers beside the catalog (its readers' lock,
    catalog/runlock.py): inside a source it is left out like <catalog>.lock, not backed
    up as a file whose times change whenever a restore ends."""
    src = make_tree(tmp_path / "src", seed=6, files=5)
    cat = str(src / "catalog.sqlite")
    args = ("backup", str(src), *devs(tmp_path))
    first = run_cli(*args, "--catalog", cat, "--json")
    assert first.code == 0, first.err
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.err
    assert os.path.isfile(f"{cat}.readers"), "verify held the readers' lock"
    second = run_cli(*args, "--catalog", cat, "--json")
    assert second.code == 0, second.err
    assert not any(p.startswith(cat) for p in set_paths(cat, second.json["set"]))


def test_a_device_named_through_a_symlink_is_left_out_too(tmp_path):
    src = tmp_path / "src"
    write(src / "f", b"data")
    inner = src / "disk0"
    inner.mkdir()
    os.symlink(inner, tmp_path / "alias")
    outer = tmp_path / "disk1"
    outer.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(tmp_path / "alias"), "-d", str(outer),
                "--catalog", cat, "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert set_paths(cat) == {str(src), f"{src}/f"}


def test_plan_counts_and_lists_what_is_excluded_bounded(tmp_path):
    src = tmp_path / "src"
    for i in range(1100):
        write(src / "logs" / f"{i:04}.log", b"l")
    write(src / "data.bin", b"d" * 1000)
    r = run_cli("plan", str(src), *devs(tmp_path), "--exclude", "*.log", "--json")
    assert r.code == 0, r.err
    ex = r.json["excluded"]
    assert ex["entries"] == 1100 and ex["rules"] == {"--exclude *.log": 1100}
    assert len(ex["paths"]) == 1000 and ex["truncated"] is True
    assert ex["paths"][0] == {"path": f"{src}/logs/0000.log", "rule": "--exclude *.log"}
    assert sum(d["bytes"] for d in r.json["devices"]) == 1000
    text = run_cli("plan", str(src), *devs(tmp_path / "t"), "--exclude", "logs/")
    assert text.code == 0, text.err
    assert "excluded: 1 entries" in text.out and "--exclude logs/" in text.out


def test_a_pattern_that_matches_nothing_is_shown_with_no_count(tmp_path):
    """Patterns anchor at '/', not at the source root: 'logs/x' names /logs/x only."""
    src = tmp_path / "src"
    write(src / "logs" / "x", b"l")
    r = run_cli("plan", str(src), *devs(tmp_path), "--exclude", "logs/x", "--json")
    assert r.code == 0, r.err
    assert r.json["excluded"]["entries"] == 0
    r = run_cli("plan", str(src), *devs(tmp_path / "b"), "--exclude", "**/logs/x", "--json")
    assert r.json["excluded"]["rules"] == {"--exclude **/logs/x": 1}


@pytest.mark.parametrize(
    "pattern",
    ["*.bin", "dir*/", "**/dir17", "SRC/dir2", "file1*", "**/dir2/**/*.bin", "SRC/dir*/file1*"],
)
def test_backup_exclude_and_restore_exclude_follow_one_rule(tmp_path, pattern):
    """A set made with --exclude P restores what a full set restores with --exclude P."""
    src = make_tree(tmp_path / "src", seed=11, files=30, max_size=2000)
    pattern = pattern.replace("SRC", str(src))
    cat_a, cat_b = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    r = run_cli("backup", str(src), *devs(tmp_path / "a"), "--catalog", cat_a)
    assert r.code == 0, r.err
    r = run_cli(
        "backup", str(src), *devs(tmp_path / "b"), "--catalog", cat_b, "--exclude", pattern,
        "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert sum(r.json["excluded"].values()) > 0, "the pattern leaves something out"
    out_a, out_b = tmp_path / "out_a", tmp_path / "out_b"
    r = run_cli("restore", "--target", str(out_a), "--catalog", cat_a, "--exclude", pattern)
    assert r.code == 0, r.err
    r = run_cli("restore", "--target", str(out_b), "--catalog", cat_b)
    assert r.code == 0, r.err
    assert snapshot(out_a) == snapshot(out_b)


def test_bad_selection_options_are_usage_errors(tmp_path):
    src = tmp_path / "src"
    write(src / "f")
    r = run_cli("backup", str(src), *devs(tmp_path), "--exclude-file", str(tmp_path / "none"))
    assert r.code == 2 and "cannot read exclude file" in r.err and "Traceback" not in r.err
    r = run_cli("plan", str(src), *devs(tmp_path / "b"), "--exclude-if-present", "a/b")
    assert r.code == 2 and "plain name" in r.err


def test_selection_applies_to_a_snapshot_by_the_live_paths(tmp_path):
    """Read from a snapshot (--pre-command), excluded by the paths recorded (the live
    ones); the tag is looked for in the snapshot, and a device inside the source is
    still left out."""
    src = tmp_path / "src"
    write(src / "keep.txt", b"k")
    write(src / "drop.log", b"d")
    write(src / "tagged" / ".nobackup", b"")
    write(src / "tagged" / "f", b"t")
    inner = src / "disk0"
    inner.mkdir()
    outer = tmp_path / "disk1"
    outer.mkdir()
    snap = tmp_path / "snap"
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(src), "-d", str(inner), "-d", str(outer), "--catalog", cat, "--json",
        "--pre-command", f"cp -a {src} {snap} && echo {snap}", "--post-command", f"rm -rf {snap}",
        "--exclude", f"{src}/*.log", "--exclude-if-present", ".nobackup",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert set_paths(cat) == {str(src), f"{src}/keep.txt"}
    assert r.json["excluded"] == {
        f"automatic: backup device {inner}": 1,
        f"--exclude {src}/*.log": 1,
        "--exclude-if-present .nobackup": 1,
    }

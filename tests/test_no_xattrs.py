"""``backup --no-xattrs`` (and ``no-xattrs = true`` in a profile) leaves extended
attributes, ACLs and capabilities out (issue 13): none is read (an entry whose attributes
exceed the bound is not even named), none is stored (no kind-8 record, nothing in the
catalog), and restore gives the files, owners and modes without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import restored_root, run_cli, snapshot
from fsfixtures import tmpfs_fixture  # noqa: F401
from parbackup.catalog import Catalog
from parbackup.xattrs import MAX_META
from test_compact_meta import metas
from test_metadata import xattrs_of

pytestmark = pytest.mark.slow  # real processes


def tree_with_attributes(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    small = root / "d" / "small.txt"
    small.write_bytes(b"with one attribute\n")
    os.setxattr(small, "user.color", b"blue")
    os.setxattr(root / "d", "user.dir", b"1")
    big = root / "big.txt"  # over the bound: a normal backup warns about it (exit 3)
    big.write_bytes(b"with too many attributes\n")
    os.setxattr(big, "user.a", bytes(MAX_META // 2))
    os.setxattr(big, "user.b", bytes(MAX_META // 2))
    (root / "plain.bin").write_bytes(os.urandom(200_000))
    return root


@pytest.mark.parametrize("how", ["option", "profile"])
def test_no_xattrs_reads_and_stores_none(tmpfs, tmp_path, device_dirs, how):
    src = tree_with_attributes(tmpfs("src", "8m") / "tree")  # tmpfs: 64 KiB attributes
    devs = device_dirs(2)
    cat = tmp_path / "cat.sqlite"
    args = [str(src), *[a for d in devs for a in ("-d", str(d))], "--catalog", str(cat)]
    env = {}
    if how == "option":
        args.append("--no-xattrs")
    else:
        config = tmp_path / "xdg" / "parbackup" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text("[profiles.lean]\nno-xattrs = true\n")
        env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
        args += ["--profile", "lean"]
    r = run_cli("backup", *args, "--json", env=env)
    assert r.code == 0, r.out + r.err  # the oversized attributes were not even read
    assert r.json["status"] == "complete" and r.json["skipped"] == []
    assert metas(devs) == {}
    listed = run_cli("files", "--catalog", str(cat), "--json").json["files"]
    assert listed and not any(f.get("xattrs") for f in listed)
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", str(cat), "--target", str(out), "--json")
    assert r.code == 0, r.out + r.err
    back = restored_root(out, src)
    assert snapshot(back) == snapshot(src)  # data, modes, times
    for rel in ("d", "d/small.txt", "big.txt"):
        assert xattrs_of(back / rel) == {}, rel

    # without the option the same tree keeps them (and names the oversized file)
    r = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))],
                "--catalog", str(tmp_path / "full.sqlite"), "--json")  # fmt: skip
    assert r.code == 3, r.out + r.err
    assert [s["path"] for s in r.json["skipped"]] == [str(src / "big.txt")]
    assert len(metas(devs)) == 2


def test_switching_xattrs_on_and_off_between_incremental_sets(tmpfs, tmp_path, device_dirs):
    """An incremental set takes a reused file's attributes from its parent. After a
    ``--no-xattrs`` parent (none read) the next set with them reads every file again,
    so unchanged files keep their attributes; a ``--no-xattrs`` child of a set that has
    them stores none."""
    src = tmpfs("src", "8m") / "tree"
    (src / "d").mkdir(parents=True)
    kept = src / "d" / "kept.txt"
    kept.write_bytes(b"unchanged between the sets\n")
    os.setxattr(kept, "user.color", b"blue")
    devs = device_dirs(2)
    cat = tmp_path / "cat.sqlite"
    args = [str(src), *[a for d in devs for a in ("-d", str(d))], "--catalog", str(cat)]

    def restored(name: str) -> Path:
        out = tmp_path / name
        r = run_cli("restore", "--catalog", str(cat), "--target", str(out), "--json")
        assert r.code == 0, r.out + r.err
        return restored_root(out, src) / "d" / "kept.txt"

    r = run_cli("backup", *args, "--no-xattrs", "--json")
    assert r.code == 0, r.out + r.err
    assert xattrs_of(restored("first")) == {}
    r = run_cli("backup", *args, "--incremental", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["kind"] == "full", r.json  # read again: the parent holds no attributes
    assert xattrs_of(restored("second")) == {"user.color": b"blue"}
    r = run_cli("backup", *args, "--incremental", "--no-xattrs", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["kind"] == "incremental", r.json
    assert xattrs_of(restored("third")) == {}
    r = run_cli("backup", *args, "--incremental", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["kind"] == "full", r.json
    assert xattrs_of(restored("fourth")) == {"user.color": b"blue"}
    r = run_cli("forget", "--catalog", str(cat), "--keep-last", "1", "--prune", "--json")
    assert r.code == 0, r.out + r.err
    with Catalog(str(cat)) as c:
        keys = [k for (k,) in c.db.execute("SELECT key FROM meta WHERE key LIKE 'noxattrs:%'")]
    assert keys == []  # the --no-xattrs marks went with their sets


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_catalog_rebuilt_from_the_devices_keeps_the_no_xattrs_mark(
    tmp_path, device_dirs, encrypt
):
    """The ``--no-xattrs`` mark travels in the volume headers' set metadata (sealed in an
    encrypted set), so a catalog rebuilt from the devices knows the set read no
    attributes (``Catalog.has_xattrs``, which decides whether an incremental child may
    take a reused file's attributes from it), and the next incremental backup restores
    the attributes. Before, the rebuilt set looked like one whose files had none; only
    the rebuilt rows' unknown ctimes (and ``--rehash`` reading the attributes again)
    kept a child from reusing them bare."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    kept = src / "d" / "kept.txt"
    kept.write_bytes(b"unchanged between the sets\n")
    os.setxattr(kept, "user.color", b"blue")
    devs = device_dirs(2)
    dargs = [a for d in devs for a in ("-d", str(d))]
    env = {"PARBACKUP_PASSWORD": "correct horse battery"} if encrypt else {}
    first = tmp_path / "first.sqlite"
    extra = ["--encrypt"] if encrypt else []
    r = run_cli("backup", str(src), *dargs, "--catalog", str(first), "--no-xattrs", *extra,
                env=env)  # fmt: skip
    assert r.code == 0, r.out + r.err
    cat = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *dargs, "--catalog", str(cat), "--json", env=env)
    assert r.code == 0, r.out + r.err
    [rebuilt] = [s["set"] for s in r.json["sets"]]
    with Catalog(str(cat), create=False) as c:
        assert not c.has_xattrs(rebuilt)
    r = run_cli("backup", str(src), *dargs, "--catalog", str(cat), "--incremental", "--json",
                env=env)  # fmt: skip
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", str(cat), "--target", str(out), env=env)
    assert r.code == 0, r.out + r.err
    assert xattrs_of(restored_root(out, src) / "d" / "kept.txt") == {"user.color": b"blue"}

"""Where a regular file's extended attributes are read (issue 10, a million files): the
scan of a local tree makes no attribute system call for a regular file with data (the
mover reads them from the descriptor it reads the bytes through), and they still reach
the kind-8 records, the catalog and a restore, also for a file an incremental backup
reuses without reading it.

The system calls are counted by strace on a real scan in a child process, between two
marker calls, whatever path the kernel offers (``listxattrat``, shown by an older strace
as ``syscall_0x1d1``, or ``llistxattr`` through /proc/self/fd).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli
from test_resume import kill_mid_backup

_SCAN = """
import os, sys
from parbackup.engine.prepare import scan, source_specs
skipped = []
try: os.stat(b"/.parbackup-scan-begins")
except OSError: pass
entries = scan(source_specs([sys.argv[1]]), skipped)
try: os.stat(b"/.parbackup-scan-ends")
except OSError: pass
with_meta = sorted(entries.path(i) for i in range(len(entries)) if entries.meta_bytes(i))
print(len(entries), *with_meta, sep="\\n")
"""
_LIST = re.compile(r"\b(l?listxattr|listxattrat|syscall_0x1d1)\(")
"""A listing of an entry's attributes (465 is ``listxattrat`` on x86_64 and arm64)."""

pytestmark = pytest.mark.slow  # real backups (strace, incremental, resume)


def xattrs_of(path: Path) -> dict[str, bytes]:
    return {
        n: os.getxattr(path, n, follow_symlinks=False)
        for n in os.listxattr(path, follow_symlinks=False)
    }


def tree(root: Path) -> dict[str, int]:
    """30 regular files with data (some with attributes), and one each of: a
    subdirectory (with an attribute), an empty file, a symlink; what each kind counts."""
    (root / "sub").mkdir(parents=True)
    for i in range(30):
        f = root / ("sub" if i % 2 else ".") / f"f{i:02d}"
        f.write_bytes(b"x" * (i + 1))
        if i % 5 == 0:
            os.setxattr(f, "user.n", str(i).encode())
    os.setxattr(root / "sub", "user.dir", b"d")
    (root / "empty").write_bytes(b"")
    os.setxattr(root / "empty", "user.e", b"e")
    (root / "link").symlink_to("f00")
    return {"data files": 30, "others": 4}  # root, sub, empty, link


def test_the_scan_reads_no_attributes_of_a_regular_file_with_data(tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    src = tmp_path / "src"
    counts = tree(src)
    log = tmp_path / "strace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(log), sys.executable, "-c", _SCAN, str(src)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "parbackup-scan-begins" in line)
    end = next(i for i, line in enumerate(lines) if "parbackup-scan-ends" in line)
    listings = [line for line in lines[begin:end] if _LIST.search(line)]
    # one listing per entry that is not a regular file with data: the 30 files have none
    assert len(listings) == counts["others"], listings
    total, *with_meta = proc.stdout.split("\n")[:-1]
    assert int(total) == counts["data files"] + counts["others"]
    assert with_meta == [str(src / "empty"), str(src / "sub")]


def test_attributes_read_by_the_mover_reach_the_records_catalog_and_restore(tmp_path):
    src = tmp_path / "src"
    tree(src)
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    for d in devices:
        d.mkdir()
    catalog = tmp_path / "catalog.sqlite"
    args = [a for d in devices for a in ("-d", str(d))]
    r = run_cli("backup", str(src), *args, "--catalog", str(catalog), "--json")
    assert r.code == 0, r.err
    r = run_cli("files", "--catalog", str(catalog), "--json")
    assert r.code == 0, r.err
    listed = {f["path"]: f.get("xattrs", []) for f in r.json["files"]}
    assert listed[str(src / "f00")] == ["user.n"]
    assert listed[str(src / "sub" / "f05")] == ["user.n"]
    assert listed[str(src / "f02")] == []
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(target))
    assert r.code == 0, r.out + r.err
    out = restored_root(target, src)
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        assert xattrs_of(out / rel) == xattrs_of(f), rel


@pytest.mark.parametrize("how", ["--incremental", "--rehash"])
def test_a_file_an_incremental_backup_reuses_keeps_its_attributes(tmp_path, how):
    src = tmp_path / "src"
    src.mkdir()
    kept, changed = src / "kept.bin", src / "changed.bin"
    kept.write_bytes(os.urandom(50_000))
    changed.write_bytes(os.urandom(50_000))
    os.setxattr(kept, "user.k", b"same")
    os.setxattr(changed, "user.c", b"1")
    devices = [tmp_path / "dev1", tmp_path / "dev2"]
    for d in devices:
        d.mkdir()
    catalog = tmp_path / "catalog.sqlite"
    args = [a for d in devices for a in ("-d", str(d))]
    assert run_cli("backup", str(src), *args, "--catalog", str(catalog)).code == 0
    os.setxattr(changed, "user.c", b"2")  # its data stays: --rehash reuses it too
    r = run_cli("backup", str(src), *args, "--catalog", str(catalog), how, "--json")
    assert r.code == 0, r.err
    assert r.json["reused"] == (100_000 if how == "--rehash" else 50_000)
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", str(catalog), "--target", str(target))
    assert r.code == 0, r.out + r.err
    out = restored_root(target, src)
    assert xattrs_of(out / "kept.bin") == {"user.k": b"same"}
    assert xattrs_of(out / "changed.bin") == {"user.c": b"2"}


@pytest.mark.slow
def test_a_resumed_backup_keeps_the_attributes_of_what_the_killed_run_wrote(tmp_path, device_dirs):
    """The killed run's movers sent the attributes of the files they made durable
    (``Metas`` before ``Durable``); the run that resumes reuses those files unread and
    takes their attributes from the killed run's catalog rows."""
    tree = make_tree(tmp_path / "src", seed=32, files=40, max_size=300_000, big=(4 << 20,))
    files = [p for p in sorted(tree.rglob("*")) if p.is_file() and not p.is_symlink()]
    for k, f in enumerate(files):
        os.setxattr(f, "user.k", str(k).encode())
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    kill_mid_backup(tmp_path, cat, tree, devs, "3MiB")
    args = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *args, "--catalog", cat, "--json")
    assert r.code == 0, r.err
    assert r.json["reused"] > 0
    target = tmp_path / "target"
    r = run_cli("restore", "--catalog", cat, "--target", str(target))
    assert r.code == 0, r.out + r.err
    out = restored_root(target, tree)
    for k, f in enumerate(files):
        assert xattrs_of(out / f.relative_to(tree)) == {"user.k": str(k).encode()}, f

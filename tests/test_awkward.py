"""Awkward files: odd names, deep trees, hard links, sparse files, FIFOs, sockets, device
nodes, files vanishing, unreadable directories, empty files and sources, symlinked source."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.progress import Started
from parbackup.readback.restore import RestoreOptions, run_restore


def backup_and_restore(tmp_path: Path, sources: list[Path], devs: int = 2, on_event=None):
    dirs = []
    for i in range(devs):
        d = tmp_path / f"dev{i}"
        d.mkdir(exist_ok=True)
        dirs.append(str(d))
    cat = str(tmp_path / "cat.sqlite")
    with Catalog(cat) as catalog:
        report = run_backup(
            [str(s) for s in sources], dirs, catalog, on_event=on_event or (lambda e: None)
        )
        out = tmp_path / "out"
        restored = run_restore(catalog, RestoreOptions(target=str(out)))
    return report, restored, out


def test_names_depth_and_empties(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(b"latin1-\xe9\xff")).write_bytes(b"not utf-8 name")
    (src / ("L" * 255)).write_bytes(b"longest name")
    (src / "empty").write_bytes(b"")
    (src / "emptydir").mkdir()
    deep = src
    for i in range(180):  # ~3.8 KB of path, just under PATH_MAX
        deep = deep / f"d{i:03d}-xxxxxxxxxxxxxx"
    deep.mkdir(parents=True)
    (deep / "bottom").write_bytes(b"deep")
    report, restored, out = backup_and_restore(tmp_path, [src])
    assert report.status == "complete" and not report.skipped
    assert restored.damaged == []
    assert snapshot(restored_root(out, src)) == snapshot(src)


def test_empty_source_and_source_that_is_a_symlink(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"x")
    link = tmp_path / "link"
    os.symlink(real, link)
    report, restored, out = backup_and_restore(tmp_path, [empty, link])
    assert report.status == "complete" and restored.damaged == []
    assert snapshot(restored_root(out, empty)) == {}
    # the source symlink is recorded as the link it is, never followed
    assert os.readlink(out / str(link).lstrip("/")) == str(real)


def test_hard_links_are_restored_as_hard_links(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one").write_bytes(os.urandom(50_000))
    os.link(src / "a" / "one", src / "two")
    os.link(src / "a" / "one", src / "three")
    report, restored, out = backup_and_restore(tmp_path, [src])
    assert restored.damaged == []
    assert report.bytes == 50_000  # the data went once
    back = restored_root(out, src)
    inodes = {os.lstat(back / p).st_ino for p in ("a/one", "two", "three")}
    assert len(inodes) == 1 and os.lstat(back / "two").st_nlink == 3
    assert (back / "three").read_bytes() == (src / "a" / "one").read_bytes()
    # restoring only a later name still gives its bytes
    with Catalog(str(tmp_path / "cat.sqlite")) as catalog:
        r = run_restore(
            catalog, RestoreOptions(target=str(tmp_path / "only"), includes=(str(src / "t*"),))
        )
    assert r.damaged == []
    only = restored_root(tmp_path / "only", src)
    assert (only / "two").read_bytes() == (src / "a" / "one").read_bytes()
    assert os.lstat(only / "two").st_ino == os.lstat(only / "three").st_ino


def test_sparse_file_is_restored_sparse(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as fh:
        fh.write(b"head")
        fh.seek(24 << 20)
        fh.write(b"tail")
    _report, restored, out = backup_and_restore(tmp_path, [src])
    assert restored.damaged == []
    back = restored_root(out, src) / "sparse"
    assert back.read_bytes() == (src / "sparse").read_bytes()
    assert back.stat().st_blocks * 512 < 1 << 20


def test_files_ending_in_zeros_keep_their_length(tmp_path):
    """Zero blocks are left as holes; a file whose last bytes are zeros still comes back
    at its full length (a reader that sized files by the bytes it wrote cut them short)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(4096)
    shapes = {
        "partial_zero_tail": data + bytes(4),  # the last, short block is all zeros
        "zero_block_tail": data + bytes(4096),
        "zeros_then_tail": data + bytes(8192) + b"x" + bytes(100),
        "last_record_zeros": os.urandom(4 << 20) + bytes(1 << 20),  # a record of zeros
        "only_zeros": bytes(10_000),
    }
    for name, content in shapes.items():
        (src / name).write_bytes(content)
    _report, restored, out = backup_and_restore(tmp_path, [src])
    assert restored.damaged == []
    back = restored_root(out, src)
    for name, content in shapes.items():
        assert (back / name).read_bytes() == content, name


def test_fifo_socket_and_device_nodes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo", 0o640)  # nobody writes it: reading it would hang
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    null = os.stat("/dev/null")
    can_mknod = True
    try:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, null.st_rdev)
    except PermissionError:
        can_mknod = False
    try:
        report, restored, out = backup_and_restore(tmp_path, [src])
    finally:
        sock.close()
    assert report.status == "complete" and not report.skipped
    back = restored_root(out, src)
    assert stat.S_ISFIFO(os.lstat(back / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(back / "fifo").st_mode) == 0o640
    assert stat.S_ISSOCK(os.lstat(back / "sock").st_mode)
    if can_mknod:
        st = os.lstat(back / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev
    assert restored.damaged == []


@pytest.mark.slow
def test_device_node_without_privilege_is_skipped_not_damaged(tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to make the node and setpriv to drop CAP_MKNOD")
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.stat("/dev/null").st_rdev)
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), "--catalog", cat)
    assert r.code == 0, r.err
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-mknod",
            sys.executable,
            "-m",
            "parbackup",
            "restore",
            "--target",
            str(tmp_path / "out"),
            "--catalog",
            cat,
            "--json",
        ],
        env=env,
        capture_output=True,
    )
    import json

    doc = json.loads(proc.stdout)
    assert proc.returncode == 3, proc.stderr
    assert doc["damaged"] == []
    assert [s["path"] for s in doc["skipped"]] == [str(src / "null")]
    assert "Operation not permitted" in doc["skipped"][0]["error"]


def test_file_vanishing_after_the_scan_is_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(10_000))

    def on_event(event):
        if isinstance(event, Started):
            (src / "f2").unlink()

    report, _restored, out = backup_and_restore(tmp_path, [src], on_event=on_event)
    assert [(s.path, s.error) for s in report.skipped] == [
        (str(src / "f2"), "No such file or directory")
    ]
    assert report.exit_code == 3
    assert snapshot(restored_root(out, src)) == snapshot(src)


@pytest.mark.slow
def test_unreadable_directory_as_unprivileged_process(tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is missing")
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "inside").write_bytes(b"secret")
    (src / "unreadable").write_bytes(b"secret")
    (src / "fine").write_bytes(b"fine")
    (src / "locked").chmod(0)
    (src / "unreadable").chmod(0)
    devs = [tmp_path / "d0", tmp_path / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    env = {**os.environ, "PYTHONPATH": SRC}
    drop = "--bounding-set=-dac_override,-dac_read_search" if os.geteuid() == 0 else "--"
    try:
        proc = subprocess.run(
            [
                "setpriv",
                drop,
                sys.executable,
                "-m",
                "parbackup",
                "backup",
                str(src),
                "-d",
                str(devs[0]),
                "-d",
                str(devs[1]),
                "--catalog",
                cat,
                "--json",
            ],
            env=env,
            capture_output=True,
            timeout=120,
        )
    finally:
        (src / "locked").chmod(0o755)
        (src / "unreadable").chmod(0o644)
    import json

    doc = json.loads(proc.stdout)
    assert proc.returncode == 3, proc.stderr
    assert doc["status"] == "complete"
    assert sorted((s["path"], s["error"]) for s in doc["skipped"]) == [
        (str(src / "locked"), "Permission denied"),
        (str(src / "unreadable"), "Permission denied"),
    ]
    r = run_cli("restore", "--target", str(tmp_path / "out"), "--catalog", cat)
    assert r.code == 3, r.err  # the file the set lists but does not hold is named
    assert f"{src / 'unreadable'}: could not be read when it was backed up" in r.out
    back = restored_root(tmp_path / "out", src)
    assert (back / "fine").read_bytes() == b"fine"
    assert not (back / "unreadable").exists()

"""Snapshots (F4): btrfs read-only snapshots, and the user's own pre/post commands."""

from __future__ import annotations

import glob
import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from fsfixtures import btrfs_missing, subvolume_fixture  # noqa: F401 (fixture)
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions
from parbackup.errors import BackupFailedError, UsageError
from parbackup.progress import Started
from parbackup.readback.restore import RestoreOptions, run_restore


def devices_args(devs) -> list[str]:
    return [a for d in devs for a in ("--device", str(d))]


@pytest.mark.slow
def test_pre_and_post_commands(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=4, files=12)
    before = snapshot(tree)
    snap = tmp_path / "snap"
    status = tmp_path / "status.txt"
    # the "snapshot" is a copy; the live tree changes right after it is taken
    pre = f'cp -a "$PARBACKUP_SOURCES" {snap} && echo changed > {tree}/file0.bin && echo {snap}'
    post = f'rm -rf "$PARBACKUP_SNAPSHOTS"; echo "$PARBACKUP_STATUS" > {status}'
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(tree), *devices_args(device_dirs(2)), "--catalog", cat,
        "--pre-command", pre, "--post-command", post, "--json",
    )  # fmt: skip
    assert r.code == 0, r.err + r.out
    assert not snap.exists() and status.read_text() == "complete\n"
    r = run_cli("files", "--catalog", cat, "--json")
    assert all(f["path"].startswith(str(tree)) for f in r.json["files"])  # live paths recorded
    out = tmp_path / "out"
    assert run_cli("restore", "--target", str(out), "--catalog", cat).code == 0
    assert snapshot(restored_root(out, tree)) == before
    assert (tree / "file0.bin").read_bytes() == b"changed\n"


@pytest.mark.slow
def test_post_command_runs_when_backup_fails(tmp_path):
    tree = make_tree(tmp_path / "src", seed=4, files=3)
    snap, status = tmp_path / "snap", tmp_path / "status.txt"
    not_a_device = tmp_path / "not-mounted"  # a device failure (a regular file: exit 2)
    r = run_cli(
        "backup", str(tree), "--device", str(not_a_device), "--catalog",
        str(tmp_path / "cat.sqlite"), "--pre-command", f"cp -a {tree} {snap}; echo {snap}",
        "--post-command", f'rm -rf {snap}; echo "$PARBACKUP_STATUS" > {status}',
    )  # fmt: skip
    assert r.code == 1
    assert not snap.exists() and status.read_text() == "failed\n"


def test_post_command_runs_when_pre_command_fails(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=4, files=3)
    status = tmp_path / "status.txt"
    r = run_cli(
        "backup", str(tree), *devices_args(device_dirs(2)), "--catalog",
        str(tmp_path / "cat.sqlite"), "--pre-command", "echo no lvm here >&2; exit 5",
        "--post-command", f'echo "$PARBACKUP_STATUS" > {status}',
    )  # fmt: skip
    assert r.code == 1 and "no lvm here" in r.err
    assert status.read_text() == "failed\n"


# -- btrfs -----------------------------------------------------------------------------
def leftover_snapshots(vol: Path) -> list[str]:
    out = subprocess.run(
        ["btrfs", "subvolume", "list", str(vol)], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if ".parbackup-snapshot-" in line]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(bool(btrfs_missing()), reason=btrfs_missing())
def test_btrfs_snapshot_backup_while_writer_runs(tmp_path, device_dirs, subvolume):
    vol = subvolume
    make_tree(vol / "data", seed=11, files=40)
    hot = vol / "hot"
    hot.mkdir()
    for i in range(8):
        (hot / f"f{i}").write_bytes(os.urandom(1 << 20))
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            (hot / f"f{n % 8}").write_bytes(os.urandom(1 << 20))
            (hot / f"new{n}").write_bytes(os.urandom(4096))
            if n > 2:
                (hot / f"new{n - 2}").unlink()

    seen: dict = {}

    def on_event(event) -> None:
        if isinstance(event, Started):  # the snapshot exists now: record its state
            (snap,) = glob.glob(str(vol / ".parbackup-snapshot-*"))
            seen.update(snapshot(Path(snap)))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    devs = [str(d) for d in device_dirs(3)]
    try:
        with Catalog(str(tmp_path / "cat.sqlite")) as cat:
            opts = BackupOptions(snapshot="btrfs", chunk=256 << 10)
            report = run_backup([str(vol)], devs, cat, opts, on_event)
            assert report.status == "complete" and not report.inconsistent, report.to_json()
            assert report.files == len(seen) + 1
            assert {f.entry.path for f in cat.files(report.set_id)} == {str(vol)} | {
                str(vol / rel) for rel in seen
            }
            out = tmp_path / "out"
            assert run_restore(cat, RestoreOptions(target=str(out))).exit_code == 0
            assert leftover_snapshots(vol) == []

            # the backup fails (no usable device): the snapshot goes all the same
            with pytest.raises(BackupFailedError):
                run_backup([str(vol)], [str(tmp_path / "not-mounted")], cat, opts)
            assert leftover_snapshots(vol) == []
            # a configuration mistake (a device that is a regular file): the same
            bad = tmp_path / "not-a-dir"
            bad.write_text("x")
            with pytest.raises(UsageError):
                run_backup([str(vol)], [str(bad)], cat, opts)
            assert leftover_snapshots(vol) == []

            # snapshots keep inode numbers and ctimes: an incremental run reuses data/
            again = run_backup([str(vol)], devs, cat, replace(opts, incremental=True))
            data_bytes = sum(p.stat().st_size for p in (vol / "data").rglob("*.bin"))
            assert again.kind == "incremental" and again.reused >= data_bytes > 0
            assert leftover_snapshots(vol) == []
    finally:
        stop.set()
        thread.join()
    assert snapshot(restored_root(out, vol)) == seen
    assert snapshot(vol) != seen  # the live tree moved on meanwhile

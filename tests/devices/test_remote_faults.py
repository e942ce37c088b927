"""A remote host that dies or hangs mid-backup is failed over; the set still restores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from servers import S3Server, SshServer

pytestmark = pytest.mark.slow


def _start_backup(tree, devices, cat, *extra, env=None):
    args = [a for d in devices for a in ("-d", d)]
    cmd = [sys.executable, "-m", "parbackup", "backup", str(tree), *args, "--catalog", cat]
    return subprocess.Popen(
        [*cmd, "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {}), "PYTHONPATH": SRC},
    )


def _degraded(proc) -> dict:
    """Wait for the backup: degraded, the second device failed while writing (not at open)."""
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 3, out.decode() + err.decode()
    report = json.loads(out)
    assert report["status"] == "degraded"
    assert [d["status"] for d in report["devices"]] == ["ok", "failed"]
    assert report["devices"][1]["failed_at"] > 0
    return report


def _restores(tmp_path, cat, tree) -> None:
    """The set restores, byte for byte."""
    target = tmp_path / "out"
    r = run_cli("restore", "--target", str(target), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(target, tree)) == snapshot(tree)


def _wait_for_volume(directory, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vols = list(directory.rglob("*.pbv"))
        if vols and vols[0].stat().st_size > 1_000_000:
            return
        time.sleep(0.05)
    raise TimeoutError("the backup never started writing")


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_sftp_host_lost_mid_backup(fault, tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=14, files=20, big=(16_000_000,))
    (disk,) = device_dirs(1)
    remote = tmp_path / "remote"
    remote.mkdir()
    server = SshServer(tmp_path / "ssh").start()
    try:
        # held to 2 MB/s so the host is lost while it is still being written
        sftp = server.url(remote, "limit=2M&timeout=5")
        cat = str(tmp_path / "cat.sqlite")
        proc = _start_backup(tree, [str(disk), sftp], cat, "--device-timeout", "4")
        _wait_for_volume(remote)
        server.kill() if fault == "kill" else server.freeze()
        _degraded(proc)
    finally:
        server.stop()
    _restores(tmp_path, cat, tree)


def test_s3_server_killed_mid_backup(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=15, files=20, big=(16_000_000,))
    (disk,) = device_dirs(1)
    server = S3Server().start()
    try:
        bucket = server.bucket("dying")
        s3 = server.url(bucket, "dev", "limit=2M&retries=2&timeout=5")
        cat = str(tmp_path / "cat.sqlite")
        devs = [str(disk), s3]
        proc = _start_backup(tree, devs, cat, "--device-timeout", "10", env=server.env)
        _wait_for_volume(disk)  # both write at once; the S3 share is held to 2 MB/s
        server.kill()
        _degraded(proc)
    finally:
        server.stop()
    _restores(tmp_path, cat, tree)

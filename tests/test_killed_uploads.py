"""What a backup killed mid-upload leaves on S3 and SFTP, and who cleans it (issue 11).

A run killed while a volume is going up leaves, on S3, a multipart upload that was never
completed nor aborted: the store keeps (and bills) its parts for ever and ``list`` does
not show them; on an SFTP host or a directory, the half-written volume under its own name,
and, when it died writing a catalog copy or a label, a ``NAME.tmp-PID`` file. None of
that may be read as a volume; the next backup on those devices and ``prune --orphans``
remove all of it. Everything here is real: moto's S3 server and OpenSSH's sshd on
loopback, the backup killed with SIGKILL in the middle of an upload (the ``faulty+``
wrapper only stops it at a known byte, and says so through a FIFO).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import device_garbage, pause_point, wait_paused

pytestmark = pytest.mark.slow

_KILLED_WRITER = """
import os, signal, sys
from parbackup.devices.registry import open_device
dev = open_device(sys.argv[1]); dev.open()
writer = dev.replace(sys.argv[2])
writer.write(b"x" * 100_000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_a_writer(url: str, name: str) -> None:
    """A real process starts replacing ``name`` on the device and is killed before it
    commits (what a backup killed while it puts its catalog copy leaves)."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, url, name],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def backup_killed_mid_upload(
    tmp_path: Path,
    tree: Path,
    devices: list[str],
    gate: Path,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Start a backup, wait until the first device pauses mid-volume and ``ready()``
    (polled: the other devices write on meanwhile), SIGKILL it."""
    fifo = pause_point(gate)
    args = [a for d in devices for a in ("-d", d)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parbackup",
            "backup",
            str(tree),
            *args,
            "--catalog",
            str(tmp_path / "cat.sqlite"),
        ],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert wait_paused(proc, fifo), proc.stderr.read() if proc.stderr else ""
    deadline = time.monotonic() + 60
    while not ready():
        assert time.monotonic() < deadline and proc.poll() is None, "never ready to kill"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    proc.stderr.close()


def test_uploads_and_partial_files_of_killed_runs_are_cleaned(tmp_path, sshd, s3_server):
    tree = make_tree(tmp_path / "src", seed=31, files=12, big=(30_000_000,))
    bucket = s3_server.bucket("killed-uploads")
    client = s3_server.client()
    remote, disk = tmp_path / "remote", tmp_path / "disk"
    remote.mkdir()
    disk.mkdir()
    s3 = s3_server.url(bucket, "dev", "part=5MiB")
    sftp = sshd.url(remote)
    cat = str(tmp_path / "cat.sqlite")

    def uploads() -> list[str]:
        return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def volumes(root: Path) -> bool:
        return any(root.glob("sets/*/*.pbv"))

    def killed_run(n: int) -> None:
        gate = tmp_path / f"gate{n}"
        paused = f"faulty+{s3}&pause_after=6M&gate={gate}"
        # killed once the host holds a volume of the run too: its mover may open it
        # only after the S3 device has paused (connecting takes a while)
        backup_killed_mid_upload(
            tmp_path, tree, [paused, sftp, str(disk)], gate, lambda: volumes(remote)
        )

    # 1. killed mid-upload: an open upload stays on the store, a half volume on the host
    killed_run(1)
    assert len(uploads()) == 1 and "/sets/" in uploads()[0]
    assert list(remote.glob("sets/*/*.pbv"))
    r = run_cli("sets", "--catalog", cat, "--json")
    assert r.code == 0 and all(s["status"] != "complete" for s in r.json["sets"]), r.out

    # the next backup on those devices cleans it all, and completes
    r = run_cli("backup", str(tree), "-d", s3, "-d", sftp, "-d", str(disk), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert uploads() == []  # (the dead run's volumes on the others wait for a clean-up
    # after a completed run, docs/GUARANTEES.md: the next step's prune)

    # 2. killed again, and a catalog copy killed half written on the host and the disk
    killed_run(2)
    kill_a_writer(sftp, "catalog/catalog.sqlite")
    kill_a_writer(str(disk), "catalog/catalog.sqlite")
    assert len(uploads()) == 1
    assert list(remote.glob("catalog/*.tmp-*")) and list(disk.glob("catalog/*.tmp-*"))
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    discarded = r.json["discarded"]
    assert uploads() == []
    assert not list(remote.rglob("*.tmp-*")) and not list(disk.rglob("*.tmp-*"))
    assert sum(len(v) for v in discarded.values()) == 3, discarded
    assert device_garbage([remote, disk], cat) == {}
    assert all(any(d.iterdir()) for d in [*remote.glob("sets/*"), *disk.glob("sets/*")])

    # what stays is the complete set, whole
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_unfinished_writes_of_unknown_sets_are_left_alone(tmp_path, s3_server):
    """An upload under ``sets/<id>/`` of a set this catalog does not know may be another
    catalog's backup, running right now: it is never aborted."""
    tree = make_tree(tmp_path / "src", seed=32, files=4)
    bucket = s3_server.bucket("foreign-uploads")
    client = s3_server.client()
    s3 = s3_server.url(bucket, "dev")
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(tree), "-d", s3, "-d", s3_server.url(bucket, "dev2"), "--catalog", cat
    )
    assert r.code == 0, r.out + r.err
    key = "dev/sets/" + "ab" * 16 + "/other-0001.pbv"
    client.create_multipart_upload(Bucket=bucket, Key=key)
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0 and r.json["discarded"] == {}, r.out + r.err
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [key]
    client.abort_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=client.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["UploadId"],
    )

"""A remote server frozen (SIGSTOP) for longer than its timeout while restore or verify
reads from it (issue 11).

The server's processes are stopped for real, in the middle of the reading (the
``faulty+`` wrapper's ``pause_read`` only says when the reading has begun, through a
FIFO): the connection stays open and nothing answers. ``restore`` and ``verify`` must not
hang: within the device's ``?timeout=`` (and its retries) they name the device, restore
every file that does not need it byte for byte, leave no ``.part``, and exit 1; once the
server is thawed both are clean again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import SRC, environ, make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from servers import S3Server, SshServer, process_tree

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(300)]


def freeze(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def server_of(kind: str, tmp_path):
    """(device URL, a function giving the pids to freeze) of a new server of ``kind``."""
    if kind == "sftp":
        with SshServer(tmp_path / "ssh") as ssh:
            remote = tmp_path / "remote"
            remote.mkdir()
            yield ssh.url(remote), lambda: process_tree(ssh.proc.pid)
        return
    pytest.importorskip("moto.server")
    with S3Server() as s3, environ(s3.env):
        yield s3.url(s3.bucket("frozen"), "dev"), lambda: [s3.proc.pid]


@pytest.mark.parametrize(
    ("kind", "command", "at", "big"),
    [
        ("sftp", "restore", 1, 48_000_000),
        ("sftp", "verify", 0, 3_000_000),
        ("s3", "restore", 1, 48_000_000),
    ],
    ids=["sftp-restore-mid-volume", "sftp-verify-at-open", "s3-restore-mid-volume"],
)  # fmt: skip
def test_a_server_frozen_mid_read_is_given_up(tmp_path, kind, command, at, big):
    """Frozen as the first volume is opened, or once its reading began (a volume large
    enough that what the connection buffered does not hold it all)."""
    if kind == "sftp" and os.geteuid() != 0:
        pytest.skip("needs root for sshd")
    with server_of(kind, tmp_path) as (url, pids):
        frozen_read(tmp_path, url, pids, command, at, big)


def frozen_read(tmp_path, url: str, pids, command: str, at: int, big: int) -> None:
    tree = make_tree(tmp_path / "src", seed=71, files=20, big=(big,))
    disk = tmp_path / "disk"
    disk.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli("backup", str(tree), "-d", url, "-d", str(disk), "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    out = tmp_path / "out"
    args = ["--target", str(out)] if command == "restore" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", command, *args, "--catalog", cat, "--json",
         "-d", f"faulty+{url}&timeout=1&retries=1&pause_read={at}&gate={gate}"],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    frozen: list[int] = []
    try:
        assert wait_paused(proc, fifo)
        frozen = pids()  # the server and the sessions it forked for this reader
        freeze(frozen, signal.SIGSTOP)
        gate.touch()
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{command} hung on a frozen server")
    finally:
        freeze(frozen, signal.SIGCONT)
    text = stdout.decode() + stderr.decode()
    assert proc.returncode == 1, text
    # each lost file says why: a frozen SFTP server's timeout had no text ("read NAME: ")
    damaged = json.loads(stdout)["damaged"]
    assert damaged and all(not d["error"].rstrip().endswith(":") for d in damaged), damaged
    if command == "restore":
        assert not [p for p in out.rglob("*") if ".part" in p.name]
        want = snapshot(tree)
        for path, entry in snapshot(restored_root(out, tree)).items():
            assert entry == want[path], path
    r = run_cli(command, *args, "--overwrite" if args else "--json", "--catalog", cat)
    assert r.code == 0, r.out + r.err

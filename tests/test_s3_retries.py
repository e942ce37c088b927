"""A dead S3 store is asked a bounded, stated number of times (one layer retries).

botocore retries every request ``?retries=`` times; the engine's retry wrapper used to
retry each of those failures 5 times more, so a frozen store was asked 5 x ``retries``
times before a command gave it up (minutes with the defaults). The store here is moto's
real server, frozen with SIGSTOP: the kernel still completes every TCP handshake and
queues the connection for the frozen process, so the length of the listening socket's
accept queue (``/proc/net/tcp``) counts exactly the attempts the clients made.
"""

from __future__ import annotations

import os

import pytest

from conftest import environ, make_tree, run_cli
from servers import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the socket listening on 127.0.0.1:port."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # LISTEN
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


RETRIES = 3


@pytest.fixture
def frozen_store(tmp_path):
    """(catalog, S3 URL, tree, disk, server) after a backup onto the store (its URL, kept
    in the catalog, says ``timeout=1&retries=RETRIES``) and a directory; the store is
    frozen once the test starts."""
    pytest.importorskip("moto.server")
    with S3Server() as s3, environ(s3.env):
        tree = make_tree(tmp_path / "src", seed=5, files=12)
        disk = tmp_path / "disk"
        disk.mkdir()
        cat = str(tmp_path / "cat.sqlite")
        url = s3.url(s3.bucket("dead"), "dev", f"timeout=1&retries={RETRIES}")
        r = run_cli("backup", str(tree), "-d", url, "-d", str(disk), "--catalog", cat)
        assert r.code == 0, r.out + r.err
        s3.freeze()
        try:
            yield cat, url, tree, disk, s3
        finally:
            s3.thaw()


def test_a_frozen_store_is_asked_retries_times_by_verify(frozen_store):
    """verify opens the store once: RETRIES connections (it was 5 x (RETRIES + 1):
    botocore's ``max_attempts`` counted retries, not attempts), then it names the store
    for every file it holds."""
    cat, _url, _tree, _disk, s3 = frozen_store
    assert accept_queue(s3.port) == 0
    r = run_cli("verify", "--catalog", cat)
    assert r.code == 1, r.out + r.err
    assert f"gave up after {RETRIES} attempts" in r.out + r.err
    assert "Traceback" not in r.err
    assert accept_queue(s3.port) == RETRIES


def test_a_frozen_store_is_asked_retries_times_by_a_backup(frozen_store):
    """A backup fails the frozen store over to the directory after RETRIES attempts."""
    cat, url, tree, disk, s3 = frozen_store
    r = run_cli("backup", str(tree), "-d", url, "-d", str(disk), "--catalog", cat, "--json")
    assert r.code == 3, r.out + r.err
    doc = r.json
    assert doc["status"] == "degraded", doc
    assert f"gave up after {RETRIES} attempts" in r.out
    assert "Traceback" not in r.err
    assert accept_queue(s3.port) == RETRIES


def test_a_frozen_sftp_server_with_retries_is_asked_that_often(tmp_path):
    """``sftp://...?retries=N`` makes the device own the retries: N + 1 connections to a
    frozen sshd, then one permanent error; the engine's wrapper used to repeat the whole
    series 5 times (5 x (N + 1) connections)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for sshd")
    from servers import SshServer

    with SshServer(tmp_path / "ssh") as ssh:
        remote = tmp_path / "remote"
        remote.mkdir()
        url = ssh.url(remote, "timeout=1&retries=2")
        tree = make_tree(tmp_path / "src", seed=6, files=8)
        disk = tmp_path / "disk"
        disk.mkdir()
        cat = str(tmp_path / "cat.sqlite")
        r = run_cli("backup", str(tree), "-d", url, "-d", str(disk), "--catalog", cat)
        assert r.code == 0, r.out + r.err
        ssh.freeze()
        try:
            assert accept_queue(ssh.port) == 0
            r = run_cli("verify", "--catalog", cat)
            assert r.code == 1, r.out + r.err
            assert "gave up after 3 attempts" in r.out + r.err, r.out + r.err
            assert accept_queue(ssh.port) == 3
        finally:
            ssh.thaw()

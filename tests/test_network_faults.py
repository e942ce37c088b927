"""Remote devices that fail for real: an SFTP server killed mid-backup, and a host in a
network namespace frozen with SIGSTOP so that its device hangs and ``--device-timeout``
must catch it (and neither the hung writer nor closing the hung device may block the
run or the process exit).

The ``faulty+`` wrapper only pauses the remote device at a known point (``gate``); the
fault is the real server dying or freezing. Every run is restored and compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_tree
from failcases import by_url, finish, restore_and_compare, start_backup
from fsfixtures import Gate
from netfixtures import netns

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    big = (1_500_000, 500_000)
    return make_tree(tmp_path / "src", seed=5, files=30, max_size=100_000, big=big)


@pytest.fixture
def ssh_server_class():
    pytest.importorskip("paramiko", reason="needs paramiko (the sftp extra)")
    from servers import SSHD, SshServer

    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH sshd (Debian openssh-server; see scripts/setup)")
    return SshServer


def local_dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp_path / name).mkdir()
        out.append(tmp_path / name)
    return out


@pytest.mark.slow
def test_sftp_server_killed_mid_backup(tmp_path, src, ssh_server_class):
    d0, d2, remote = local_dirs(tmp_path, "d0", "d2", "remote")
    gate = Gate(tmp_path / "gate")
    with ssh_server_class(tmp_path / "ssh") as ssh:
        url = "faulty+" + ssh.url(remote, f"pause_after=200K&gate={gate}")
        proc = start_backup(tmp_path, src, [str(d0), url, str(d2)])
        gate.wait_paused()
        ssh.kill()
        gate.open()
        code, doc, err = finish(proc)
    assert code == 3, err
    failed = by_url(doc)[url]
    assert failed["status"] == "failed"
    assert "connection" in failed["error"].lower() or "closed" in failed["error"].lower()
    assert set(failed["redirected"]) == {str(d0), str(d2)}
    assert doc["balance"]["spread_bytes"] <= 1
    restore_and_compare(tmp_path, src)


@pytest.mark.slow
def test_frozen_host_hangs_and_the_timeout_catches_it(tmp_path, src, ssh_server_class):
    d0, remote = local_dirs(tmp_path, "d0", "remote")
    gate = Gate(tmp_path / "gate")
    with netns("f") as (ns, address):
        server = ssh_server_class(tmp_path / "ssh", host=address, netns=ns)
        with server as ssh:
            url = "faulty+" + ssh.url(remote, f"pause_after=200K&gate={gate}")
            proc = start_backup(tmp_path, src, [url, str(d0)], "--device-timeout", "3")
            gate.wait_paused()
            ssh.freeze()  # sshd and its sftp server stop; the TCP connection stays up
            gate.open()
            code, doc, err = finish(proc, timeout=90)  # the process must exit on its own
            ssh.thaw()
    assert code == 3, err
    failed = by_url(doc)[url]
    assert failed["status"] == "failed"
    assert "no progress for 3 seconds" in failed["error"]
    assert by_url(doc)[str(d0)]["bytes"] == doc["bytes"]
    restore_and_compare(tmp_path, src)

"""Remote devices that fail for real: an SFTP server killed mid-backup, and a host in a
network namespace frozen with SIGSTOP so that its device hangs and ``--device-timeout``
must catch it (and neither the hung writer nor closing the hung device may block the
run or the process exit).

The ``faulty+`` wrapper only pauses the remote device at a known point (``gate``); the
fault is the real server dying or freezing. Every run is restored and compared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import environ, make_tree
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
        gate.wait_paused(proc)
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
@pytest.mark.parametrize("fault", ["freeze", "cut"])
def test_hung_host_is_caught_by_the_timeout(tmp_path, src, ssh_server_class, fault):
    """The host in a network namespace freezes (SIGSTOP: the TCP connection stays up,
    nothing answers) or its link is cut (packets vanish): the device hangs, the timeout
    gives it up, and the process exits on its own."""
    d0, remote = local_dirs(tmp_path, "d0", "remote")
    gate = Gate(tmp_path / "gate")
    with netns(fault[0]) as ns:
        server = ssh_server_class(tmp_path / "ssh", host=ns.address, netns=ns.name)
        with server as ssh:
            url = "faulty+" + ssh.url(remote, f"pause_after=200K&gate={gate}")
            proc = start_backup(tmp_path, src, [url, str(d0)], "--device-timeout", "3")
            gate.wait_paused(proc)
            if fault == "freeze":
                ssh.freeze()
            else:
                ns.cut()
            gate.open()
            code, doc, err = finish(proc, timeout=90)  # the process must exit on its own
            ssh.thaw()
    assert code == 3, err
    failed = by_url(doc)[url]
    assert failed["status"] == "failed"
    assert "no progress for 3 seconds" in failed["error"]
    assert by_url(doc)[str(d0)]["bytes"] == doc["bytes"]
    restore_and_compare(tmp_path, src)


@pytest.fixture
def moto_process(tmp_path):
    """moto's S3 server as its own process (so that it can be frozen), with a bucket."""
    boto3 = pytest.importorskip("boto3", reason="needs boto3 (the s3 extra)")
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip("needs moto[server] (the test extra)")
    from servers import free_port, stop_process, wait_port

    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        # moto's imports take seconds on a busy machine (as servers.S3Server allows)
        wait_port(port, timeout=60, proc=proc)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, **_creds(env))
        client.create_bucket(Bucket="frozen")
        yield proc, endpoint, env
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)
        log.close()


def _creds(env: dict) -> dict:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@pytest.mark.slow
def test_frozen_object_store_does_not_hold_the_process_exit(tmp_path, moto_process):
    """Regression: S3 part uploads ran on ThreadPoolExecutor workers, which the
    interpreter joins at exit; with the store frozen mid-upload the backup had finished
    but the process took minutes (socket timeouts x retries) to exit."""
    proc_s3, endpoint, env = moto_process
    src = make_tree(tmp_path / "src", seed=2, files=10, max_size=50_000, big=(40 << 20,))
    (d0,) = local_dirs(tmp_path, "d0")
    gate = Gate(tmp_path / "gate")
    url = f"faulty+s3://frozen/dev?endpoint={endpoint}&part=5MiB&pause_after=12M&gate={gate}"
    with environ(env):  # the backup process inherits the store's credentials
        proc = start_backup(tmp_path, src, [str(d0), url], "--device-timeout", "2")
        gate.wait_paused(proc)  # parts are in flight: the store freezes mid-upload
        os.kill(proc_s3.pid, signal.SIGSTOP)
        gate.open()
        code, doc, err = finish(proc, timeout=60)  # minutes before the fix
    assert code == 3, err
    assert "no progress for 2 seconds" in by_url(doc)[url]["error"]
    restore_and_compare(tmp_path, src)

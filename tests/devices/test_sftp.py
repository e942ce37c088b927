"""SFTP against a real sshd: host keys, ~/.ssh/config, statvfs, lost servers, full disks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.devices.base import ACCEPT_NEW_HOST_KEYS_ENV
from parbackup.devices.registry import device_class, open_device
from parbackup.errors import DeviceError, DeviceFullError, UsageError
from servers import SshServer


def opened(url: str):
    dev = open_device(url)
    dev.open()
    return dev


def test_unknown_host_key_is_refused_then_accepted(sshd, tmp_path, monkeypatch):
    known = tmp_path / "kh"
    url = f"sftp://root@{sshd.host}:{sshd.port}{tmp_path}?identity={sshd.identity}&known_hosts={known}"
    monkeypatch.delenv(ACCEPT_NEW_HOST_KEYS_ENV, raising=False)
    with pytest.raises(DeviceError, match=r"unknown host key.*--accept-new-host-keys"):
        opened(url)
    assert not known.exists()
    monkeypatch.setenv(ACCEPT_NEW_HOST_KEYS_ENV, "1")
    opened(url).close()
    assert sshd.host_key.with_suffix(".pub").read_text().split()[1] in known.read_text()
    monkeypatch.delenv(ACCEPT_NEW_HOST_KEYS_ENV)
    opened(url).close()  # now known


def test_changed_host_key_is_always_refused(sshd, tmp_path, monkeypatch):
    other = SshServer(tmp_path / "other", port=sshd.port)  # a different key for the same host
    known = tmp_path / "kh"
    known.write_text(other.host_key_line)
    url = f"sftp://root@{sshd.host}:{sshd.port}{tmp_path}?identity={sshd.identity}&known_hosts={known}"
    monkeypatch.setenv(ACCEPT_NEW_HOST_KEYS_ENV, "1")
    with pytest.raises(DeviceError, match="CHANGED"):
        opened(url)


def test_ssh_config_alias_and_default_setup(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host backuphost\n  HostName {sshd.host}\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.identity}\n  UserKnownHostsFile {sshd.known_hosts}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "dev").mkdir()
    dev = opened(f"sftp://backuphost{tmp_path}/dev")
    try:
        dev.put("x", b"via config")
        assert dev.get("x") == b"via config"
        space = dev.raw_space()  # statvfs@openssh.com
        assert space.free and space.capacity and space.free <= space.capacity
    finally:
        dev.close()


def test_bad_key_is_an_authentication_error(sshd, tmp_path):
    from servers import keygen

    stranger = keygen(tmp_path / "stranger")
    url = f"sftp://root@{sshd.host}:{sshd.port}/tmp?identity={stranger}&known_hosts={sshd.known_hosts}"
    with pytest.raises(DeviceError, match="authentication failed"):
        opened(url)


def test_killed_server_mid_write_is_a_device_error(tmp_path):
    server = SshServer(tmp_path / "ssh").start()
    try:
        (tmp_path / "dev").mkdir()
        dev = opened(server.url(tmp_path / "dev", "retries=0&timeout=5"))
        writer = dev.create("vol")
        writer.write(b"x" * 1_000_000)
        writer.checkpoint()
        server.kill()
        with pytest.raises(DeviceError):
            for _ in range(50):
                writer.write(b"y" * 1_000_000)
            writer.commit()
        writer.abort()
        dev.close()
    finally:
        server.stop()


def test_remote_disk_full_is_device_full(sshd, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        dev = opened(sshd.url(mnt))
        writer = dev.create("big")
        with pytest.raises(DeviceFullError):
            for _ in range(10):
                writer.write(b"z" * 1_000_000)
            writer.commit()
        writer.abort()
        dev.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_missing_paramiko_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "paramiko", None)
    monkeypatch.delitem(sys.modules, "parbackup.devices.sftp", raising=False)
    with pytest.raises(UsageError, match=r"pip install 'parbackup\[sftp\]'"):
        device_class("sftp")


@pytest.mark.slow
def test_cli_backup_restore_over_sftp_with_host_key_flag(sshd, tmp_path):
    tree = make_tree(tmp_path / "src", seed=5, files=20, big=(2_500_000,))
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
    known = tmp_path / "kh"
    base = f"sftp://root@{sshd.host}:{sshd.port}{tmp_path}"
    q = f"?identity={sshd.identity}&known_hosts={known}"
    urls = [f"{base}/d1{q}", f"{base}/d2{q}"]
    cat = str(tmp_path / "cat.sqlite")
    args = ["backup", str(tree), "-d", urls[0], "-d", urls[1], "--catalog", cat, "--json"]
    r = run_cli(*args, env={ACCEPT_NEW_HOST_KEYS_ENV: ""})
    assert r.code == 1 and "unknown host key" in r.out
    r = run_cli(*args, "--accept-new-host-keys", env={ACCEPT_NEW_HOST_KEYS_ENV: ""})
    assert r.code == 0, r.out + r.err
    assert [d["status"] for d in r.json["devices"]] == ["ok", "ok"]
    assert str(sshd.identity) in r.json["devices"][0]["url"]  # paths are not secrets
    out = tmp_path / "out"
    r = run_cli(
        "restore", "--target", str(out), "--catalog", cat, env={ACCEPT_NEW_HOST_KEYS_ENV: ""}
    )
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_key_from_the_ssh_agent(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    sock = tmp_path / "agent.sock"
    cmd = ["ssh-agent", "-D", "-a", str(sock)]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        # the agent prints its variables once its socket listens (waiting up to 5 s for
        # the file, as this did, lost the race on a busy machine, and a socket bound but
        # not yet listening refuses ssh-add)
        said = [agent.stdout.readline() for _ in range(2)]
        assert said[-1].startswith("echo Agent pid"), said
        env = {"SSH_AUTH_SOCK": str(sock), "HOME": str(home)}
        subprocess.run(["ssh-add", "-q", str(sshd.identity)], env=env, check=True)
        monkeypatch.setenv("HOME", str(home))  # no keys, no config: only the agent has one
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        (tmp_path / "dev").mkdir()
        url = f"sftp://root@{sshd.host}:{sshd.port}{tmp_path}/dev?known_hosts={sshd.known_hosts}"
        dev = opened(url)
        dev.put("agent", b"ok")
        assert dev.get("agent") == b"ok"
        dev.close()
    finally:
        agent.terminate()
        agent.wait(10)

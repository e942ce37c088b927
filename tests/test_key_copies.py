"""``key add`` and ``key remove`` replace the key file's copies on the devices at once
(issue 13): a removed passphrase no longer opens a device's ``keys/<id>.json`` (nor
rebuilds the catalog from the devices), an added one does, without waiting for the next
backup. A device that cannot be reached is named (exit 3) and keeps its old copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from parbackup.crypto.keys import KeyFile, device_key_name, key_path
from parbackup.errors import KeyUnlockError
from test_crypto_e2e import sample_tree

pytestmark = pytest.mark.slow  # real processes, scrypt per command

OLD, NEW = "the first passphrase", "the second passphrase"


def device_copy(dev: Path, key_id: bytes) -> KeyFile:
    return KeyFile.from_json((dev / device_key_name(key_id)).read_bytes())


def _encrypted_backup(tmp_path: Path, devs: list[Path]):
    """An encrypted set of a sample tree on ``devs`` under passphrase OLD, and NEW in the
    file ``tmp_path/new``: (source, devices, the --catalog args, the key file)."""
    src = sample_tree(tmp_path / "src")
    cat = tmp_path / "cat.sqlite"
    base = ["--catalog", str(cat)]
    r = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], *base,
                "--encrypt", "--json", env={"PARBACKUP_PASSWORD": OLD})  # fmt: skip
    assert r.code == 0, r.err
    keyfile = KeyFile.load(key_path(cat))
    assert keyfile is not None
    (tmp_path / "new").write_text(NEW + "\n")
    return src, devs, base, keyfile


def test_key_add_and_remove_replace_the_copies_on_the_devices(tmp_path, device_dirs):
    src, devs, base, keyfile = _encrypted_backup(tmp_path, device_dirs(3))

    r = run_cli("key", "add", *base, "--new-password-file", str(tmp_path / "new"), "--json",
                env={"PARBACKUP_PASSWORD": OLD})  # fmt: skip
    assert r.code == 0, r.err
    assert sorted(r.json["devices"]["refreshed"]) == sorted(str(d) for d in devs)
    for d in devs:  # the new passphrase opens every device's copy now
        assert device_copy(d, keyfile.key_id).unlock(NEW.encode())[1] == 2

    # one device is away while the old passphrase is removed: named, exit 3
    away = devs[2].with_name("away")
    devs[2].rename(away)
    r = run_cli("key", "remove", "1", *base, "--json", env={"PARBACKUP_PASSWORD": NEW})
    assert r.code == 3, r.out + r.err
    assert r.json["status"] == "warnings" and r.json["removed"] == 1
    assert sorted(r.json["devices"]["refreshed"]) == sorted(str(d) for d in devs[:2])
    assert [n["device"] for n in r.json["devices"]["not_refreshed"]] == [str(devs[2])]
    text = run_cli("key", "list", *base)
    assert text.code == 0 and "slot 2" in text.out and "slot 1" not in text.out
    for d in devs[:2]:  # the removed passphrase no longer opens the devices' copies
        with pytest.raises(KeyUnlockError, match="wrong passphrase"):
            device_copy(d, keyfile.key_id).unlock(OLD.encode())
    # the device that was away keeps its old copy until its next backup
    assert device_copy(away, keyfile.key_id).unlock(OLD.encode())[1] == 1

    # a catalog rebuilt from the devices takes the new passphrase and refuses the old one
    dargs = [a for d in devs[:2] for a in ("-d", str(d))]
    r = run_cli("rebuild-catalog", *dargs, "--catalog", str(tmp_path / "old.sqlite"),
                env={"PARBACKUP_PASSWORD": OLD})  # fmt: skip
    assert r.code == 1 and "wrong passphrase" in r.err, r.out + r.err
    away.rename(devs[2])
    dargs = [a for d in devs for a in ("-d", str(d))]
    rebuilt = tmp_path / "rebuilt.sqlite"
    r = run_cli("rebuild-catalog", *dargs, "--catalog", str(rebuilt),
                env={"PARBACKUP_PASSWORD": NEW})  # fmt: skip
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r = run_cli("restore", "--catalog", str(rebuilt), "--target", str(out),
                env={"PARBACKUP_PASSWORD": NEW})  # fmt: skip
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)

    # with every device back, the text output says what it replaced
    r = run_cli("key", "add", *base, "--new-password-file", str(tmp_path / "new"),
                env={"PARBACKUP_PASSWORD": NEW})  # fmt: skip
    assert r.code == 0, r.err
    assert "replaced on 3 device(s)" in r.out
    assert NEW not in r.out + r.err


def test_a_key_change_waits_for_no_running_backup(tmp_path, device_dirs):
    """A backup puts the key file it loaded at its start on every device at its end. A
    ``key remove`` run meanwhile used to succeed, refresh the copies, and then see the
    backup put the removed passphrase back on every device; two key commands at once
    could also lose one's change. A key change now takes the catalog's run lock: during
    a backup (paused mid-volume through the ``faulty+`` device's FIFO) it stops at once
    with one line, changing nothing; after it, it does its work."""
    src, devs, base, keyfile = _encrypted_backup(tmp_path, device_dirs(2))
    r = run_cli("key", "add", *base, "--new-password-file", str(tmp_path / "new"),
                env={"PARBACKUP_PASSWORD": OLD})  # fmt: skip
    assert r.code == 0, r.err

    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    (src / "new.bin").write_bytes(os.urandom(2_000_000))  # a new file for the next set
    backup = subprocess.Popen(
        [sys.executable, "-m", "parbackup", "backup", str(src), *base, "--incremental",
         "-d", f"faulty+file://{devs[0]}?pause_after=1K&gate={gate}", "-d", str(devs[1])],
        env={**os.environ, "PYTHONPATH": SRC, "PARBACKUP_PASSWORD": NEW},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_paused(backup, fifo), backup.communicate()
        r = run_cli("key", "remove", "1", *base, env={"PARBACKUP_PASSWORD": NEW})
        assert r.code == 1 and "in use by another backup" in r.err, r.out + r.err
        assert "Traceback" not in r.err
        gate.touch()
        out, err = backup.communicate(timeout=300)
    finally:
        if backup.poll() is None:
            backup.kill()
            backup.communicate()
    assert backup.returncode == 0, out.decode() + err.decode()
    for d in devs:  # nothing changed: both passphrases still open every copy
        assert device_copy(d, keyfile.key_id).unlock(OLD.encode())[1] == 1

    r = run_cli("key", "remove", "1", *base, env={"PARBACKUP_PASSWORD": NEW})
    assert r.code == 0, r.out + r.err
    for d in devs:
        with pytest.raises(KeyUnlockError, match="wrong passphrase"):
            device_copy(d, keyfile.key_id).unlock(OLD.encode())
        assert device_copy(d, keyfile.key_id).unlock(NEW.encode())[1] == 2

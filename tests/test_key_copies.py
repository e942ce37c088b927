"""``key add`` and ``key remove`` replace the key file's copies on the devices at once
(issue 13): a removed passphrase no longer opens a device's ``keys/<id>.json`` (nor
rebuilds the catalog from the devices), an added one does, without waiting for the next
backup. A device that cannot be reached is named (exit 3) and keeps its old copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import restored_root, run_cli, snapshot
from parbackup.crypto.keys import KeyFile, device_key_name, key_path
from parbackup.errors import KeyUnlockError
from test_crypto_e2e import sample_tree

pytestmark = pytest.mark.slow  # real processes, scrypt per command

OLD, NEW = "the first passphrase", "the second passphrase"


def device_copy(dev: Path, key_id: bytes) -> KeyFile:
    return KeyFile.from_json((dev / device_key_name(key_id)).read_bytes())


def test_key_add_and_remove_replace_the_copies_on_the_devices(tmp_path, device_dirs):
    src = sample_tree(tmp_path / "src")
    devs = device_dirs(3)
    cat = tmp_path / "cat.sqlite"
    base = ["--catalog", str(cat)]
    r = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], *base,
                "--encrypt", "--json", env={"PARBACKUP_PASSWORD": OLD})  # fmt: skip
    assert r.code == 0, r.err
    keyfile = KeyFile.load(key_path(cat))
    assert keyfile is not None
    (tmp_path / "new").write_text(NEW + "\n")

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

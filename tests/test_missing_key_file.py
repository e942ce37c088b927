"""An encrypted catalog whose key file went missing (or was swapped for another
catalog's) never writes a set in the clear, nor with another key.

The key file lives beside the catalog (``<catalog>.key``) and nothing else said the
catalog was encrypted: moved without it (``cp catalog.sqlite`` to a new disk, a key file
deleted by hand), the nightly backup, which needs no ``--encrypt`` once a catalog has a
key, wrote its next set in the clear, exit 0 and not a word (E1), and a restore printed
"record is encrypted, but no key was given" once per file. Both now stop at once, in one
line naming the key file and where its copies lie (``keys/<id>.json`` on the devices).

And ``key remove`` never leaves a key only passphrases nobody has shown to work open.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, run_cli
from parbackup.crypto.keys import key_path

pytestmark = pytest.mark.slow  # real backups, scrypt


def _backup(src: Path, devs: list[Path], cat: Path, pw: Path, *extra: str):
    dargs = [a for d in devs for a in ("-d", str(d))]
    return run_cli(
        "backup", str(src), *dargs, "--catalog", str(cat), "--password-file", str(pw), *extra
    )


def _names_in_the_clear(devs: list[Path], name: bytes) -> list[Path]:
    return [p for d in devs for p in (d / "sets").rglob("*.pbv") if name in p.read_bytes()]


@pytest.fixture
def encrypted(tmp_path: Path):
    src = make_tree(tmp_path / "src", seed=3, files=8, max_size=20_000)
    (src / "very-secret-name.txt").write_bytes(b"the plans\n")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    cat = tmp_path / "cat.sqlite"
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    r = _backup(src, devs, cat, pw, "--encrypt", "--json")
    assert r.code == 0, r.err
    assert not _names_in_the_clear(devs, b"very-secret-name")
    return src, devs, cat, pw


def test_a_backup_without_the_catalogs_key_file_is_refused_not_written_in_the_clear(
    encrypted, tmp_path: Path
) -> None:
    src, devs, cat, pw = encrypted
    key = key_path(cat)
    key_id = json.loads(key.read_bytes())["key_id"]
    shutil.move(key, tmp_path / "kept-elsewhere.key")
    for extra in ((), ("--encrypt",)):  # --encrypt must not make a second key either
        r = _backup(src, devs, cat, pw, *extra)
        assert r.code == 1, (r.code, r.out, r.err)
        assert f"{key}: missing" in r.err and f"keys/{key_id}.json" in r.err, r.err
        assert not _names_in_the_clear(devs, b"very-secret-name")
        assert not key.exists()
    r = run_cli("sets", "--catalog", str(cat), "--json")
    assert [s["status"] for s in r.json["sets"]] == ["complete"]

    r = run_cli("restore", "--catalog", str(cat), "--password-file", str(pw), "--target", "t")
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert f"{key}: missing" in r.err and "record is encrypted" not in r.out + r.err

    shutil.copy(devs[0] / "keys" / f"{key_id}.json", key)  # what the message says to do
    target = tmp_path / "back"
    r = run_cli(
        "restore", "--catalog", str(cat), "--password-file", str(pw), "--target", str(target)
    )
    assert r.code == 0, r.err
    assert (target / str(src).lstrip("/") / "very-secret-name.txt").read_bytes() == b"the plans\n"


def test_another_catalogs_key_file_is_refused(encrypted, tmp_path: Path) -> None:
    src, devs, cat, pw = encrypted
    other = tmp_path / "other.sqlite"
    odevs = [tmp_path / "o1", tmp_path / "o2"]
    for d in odevs:
        d.mkdir()
    assert _backup(src, odevs, other, pw, "--encrypt").code == 0
    shutil.copy(key_path(other), key_path(cat))  # same passphrase, another master key
    r = _backup(src, devs, cat, pw)
    assert r.code == 1, (r.code, r.out, r.err)
    assert "encrypted with key" in r.err and "keys/" in r.err, r.err
    r = run_cli("sets", "--catalog", str(cat), "--json")
    assert [s["status"] for s in r.json["sets"]] == ["complete"]


def test_key_remove_refuses_the_slot_the_given_passphrase_opens(encrypted, tmp_path) -> None:
    """``key remove 1`` with slot 1's own passphrase left only slots no passphrase given
    had ever opened: a new passphrase saved with a stray space ("new pass " in its file,
    "new pass" typed later) then locked every set away for good. The passphrase given
    must now open a slot that stays."""
    _src, devs, cat, pw = encrypted
    new = tmp_path / "new"
    new.write_text("new pass \n")  # the stray space is part of the passphrase
    base = ("--catalog", str(cat))
    r = run_cli("key", "add", *base, "--password-file", str(pw), "--new-password-file", str(new))
    assert r.code == 0, r.err
    r = run_cli("key", "remove", "1", *base, "--password-file", str(pw))
    assert r.code == 2 and "slot 1 is the one the passphrase given opens" in r.err, r.err
    r = run_cli("key", "list", *base, "--json")
    assert [s["slot"] for s in r.json["slots"]] == [1, 2]
    for copy in (d / "keys" for d in devs):  # the devices' copies keep both slots too
        (only,) = copy.glob("*.json")
        assert len(json.loads(only.read_bytes())["slots"]) == 2
    typed = tmp_path / "typed"
    typed.write_text("new pass\n")
    r = run_cli("verify", *base, "--password-file", str(typed))
    assert r.code == 1 and "wrong passphrase" in r.err  # the slip shows before any loss
    r = run_cli("verify", *base, "--password-file", str(pw))
    assert r.code == 0, r.out + r.err
    r = run_cli("key", "remove", "2", *base, "--password-file", str(pw))
    assert r.code == 0, r.err  # slot 1's passphrase, which stays, removes slot 2

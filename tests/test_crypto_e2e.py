"""Encrypted and compressed backups end to end through the CLI (issue 13): round trips,
wrong passphrase, tampering of every kind, nothing readable left on the devices."""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.format import iter_volume, read_volume_header

pytestmark = pytest.mark.slow  # real processes, scrypt per command

PW = {"PARBACKUP_PASSWORD": "correct horse battery"}
SECRET_NAME = "very-secret-name.txt"


def sample_tree(root: Path) -> Path:
    """Text that compresses, random data that does not, names worth hiding, a link."""
    (root / "docs").mkdir(parents=True)
    (root / "docs" / SECRET_NAME).write_text(
        "the quick brown fox jumps over the lazy dog\n" * 40000
    )
    (root / "noise.bin").write_bytes(os.urandom(1_500_000))
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"tiny file")
    os.symlink("docs/" + SECRET_NAME, root / "link-to-secret")
    return root


def setup(tmp_path: Path, *extra: str) -> tuple[Path, list[Path], list[str]]:
    src = sample_tree(tmp_path / "src")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    base = ["--catalog", str(tmp_path / "cat.sqlite")]
    out = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], *base, *extra,
                  "--json", env=PW)  # fmt: skip
    assert out.code == 0, out.err
    return src, devs, base


def volumes(devs: list[Path]) -> list[Path]:
    return sorted(p for d in devs for p in d.rglob("*.pbv"))


def test_encrypted_round_trip_hides_names_and_data(tmp_path: Path) -> None:
    src, devs, base = setup(tmp_path, "--encrypt")
    keyfile = KeyFile.load(key_path(tmp_path / "cat.sqlite"))
    assert keyfile is not None
    for vol in volumes(devs):
        data = vol.read_bytes()
        assert SECRET_NAME.encode() not in data and b"quick brown fox" not in data
        with vol.open("rb") as fh:
            head = read_volume_header(fh)
            assert set(head.meta) == {"label", "volume", "volume_id", "key_id", "sealed"}
            for _pos, rec, _payload in iter_volume(fh, head.length):
                assert rec.stored >= 0 and rec.path == b"" and rec.mode == 0
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base, "--json", env=PW)
    assert restored.code == 0, restored.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)
    verified = run_cli("verify", *base, "--json", env=PW)
    assert verified.code == 0, verified.err
    # text shrank: the devices hold less than the source
    stored = sum(v.stat().st_size for v in volumes(devs))
    assert stored < 1_500_000 + 400_000


def test_compression_only_round_trip(tmp_path: Path) -> None:
    src, devs, base = setup(tmp_path, "--compression", "auto")
    assert not key_path(tmp_path / "cat.sqlite").exists()
    assert sum(v.stat().st_size for v in volumes(devs)) < 1_500_000 + 400_000
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base)
    assert restored.code == 0, restored.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)
    assert run_cli("verify", *base).code == 0


def test_later_sets_use_the_key_and_wrong_passphrase_reads_nothing(tmp_path: Path) -> None:
    src, devs, base = setup(tmp_path, "--encrypt")
    again = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], *base,
                    "--json", env=PW)  # fmt: skip
    assert again.code == 0, again.err
    set_id = json.loads(again.out)["set"]
    assert all(b"quick brown" not in v.read_bytes() for v in volumes(devs) if set_id in str(v))
    wrong = {"PARBACKUP_PASSWORD": "nope"}
    for args in (["restore", "--target", str(tmp_path / "out")], ["verify"]):
        out = run_cli(*args, *base, env=wrong)
        assert out.code == 1 and "wrong passphrase" in out.err
    assert not (tmp_path / "out").exists()
    nobackup = run_cli("backup", str(src), "-d", str(devs[0]), "-d", str(devs[1]), *base,
                       env=wrong)  # fmt: skip
    assert nobackup.code == 1 and "wrong passphrase" in nobackup.err
    none = run_cli("verify", *base, env={"PARBACKUP_PASSWORD": ""})
    assert none.code == 2 and "passphrase is needed" in none.err


def _records(vol: Path) -> list[tuple[int, object]]:
    with vol.open("rb") as fh:
        head = read_volume_header(fh)
        return [(pos, rec) for pos, rec, _p in iter_volume(fh, head.length)]


def _payload_record(devs: list[Path]) -> tuple[Path, int, object]:
    for vol in volumes(devs):
        for pos, rec in _records(vol):
            if rec.size > 100_000:
                return vol, pos, rec
    raise AssertionError("no payload record")


def _damaged(out) -> list[dict]:
    return json.loads(out.out)["damaged"]


def test_flipped_byte_is_named_and_never_restored(tmp_path: Path) -> None:
    src, devs, base = setup(tmp_path, "--encrypt")
    vol, pos, rec = _payload_record(devs)
    data = bytearray(vol.read_bytes())
    data[pos + len(rec.encode()) + rec.stored // 2] ^= 0x01  # inside the sealed payload
    vol.write_bytes(bytes(data))
    verified = run_cli("verify", *base, "--json", env=PW)
    assert verified.code == 1
    assert any("authentication failed" in d["error"] for d in _damaged(verified))
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base, "--json", env=PW)
    assert restored.code == 1
    bad = _damaged(restored)
    assert bad and all("authentication failed" in d["error"] for d in bad)
    root = restored_root(tmp_path / "out", src)
    for d in bad:  # the damaged file is not left in the target, under any name
        assert not (root / Path(d["path"]).relative_to(src)).exists()
    assert not list(root.rglob("*.part*"))


def test_swapped_records_and_foreign_volumes_are_caught(tmp_path: Path) -> None:
    """A volume of another set (same key) put in the place of this set's volume, and an
    earlier volume replayed over a later one: both fail authentication or the catalog."""
    src, devs, base = setup(tmp_path, "--encrypt")
    first = {v.parent.name: v for v in volumes(devs)}
    again = run_cli("backup", str(src), *[a for d in devs for a in ("-d", str(d))], *base,
                    "--json", env=PW)  # fmt: skip
    assert again.code == 0, again.err
    new_set = json.loads(again.out)["set"]
    new_vols = [v for v in volumes(devs) if v.parent.name == new_set]
    old_vols = [v for v in volumes(devs) if v.parent.name != new_set]
    assert first and new_vols and old_vols
    # replay: the old set's volume of the same device over the new set's volume
    for new in new_vols:
        old = next(o for o in old_vols if o.name.split("-")[0] == new.name.split("-")[0])
        shutil.copyfile(old, new)
    verified = run_cli("verify", *base, "--json", env=PW)
    assert verified.code == 1
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base, "--json", env=PW)
    assert restored.code == 1
    assert not list((tmp_path / "out").rglob(SECRET_NAME))


def test_record_swapped_within_a_volume_is_caught(tmp_path: Path) -> None:
    """Two records of equal stored size exchanged in place: the CRCs are right, the
    catalog positions are right, only the associated data tells."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c", "d"):
        (src / name).write_bytes(os.urandom(50_000))
    dev = tmp_path / "d1"
    dev.mkdir()
    (tmp_path / "d2").mkdir()
    base = ["--catalog", str(tmp_path / "cat.sqlite")]
    out = run_cli("backup", str(src), "-d", str(dev), "-d", str(tmp_path / "d2"), *base,
                  "--encrypt", "--strategy", "threshold", env=PW)  # fmt: skip
    assert out.code == 0, out.err
    for vol in volumes([dev, tmp_path / "d2"]):
        recs = [(p, r) for p, r in _records(vol) if r.size == 50_000]
        if len(recs) < 2:
            continue
        data = bytearray(vol.read_bytes())
        (p1, r1), (p2, r2) = recs[:2]
        len1 = len(r1.encode()) + r1.stored
        payload1 = bytes(data[p1 + len(r1.encode()) : p1 + len1])
        payload2 = bytes(data[p2 + len(r2.encode()) : p2 + len(r2.encode()) + r2.stored])
        data[p1 + len(r1.encode()) : p1 + len1] = payload2
        data[p2 + len(r2.encode()) : p2 + len(r2.encode()) + r2.stored] = payload1
        vol.write_bytes(bytes(data))
        break
    else:
        pytest.skip("no volume holds both files")
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base, "--json", env=PW)
    assert restored.code == 1
    assert len(_damaged(restored)) == 2


def test_rebuild_catalog_from_encrypted_devices_alone(tmp_path: Path) -> None:
    src, devs, _base = setup(tmp_path, "--encrypt")
    for d in devs:  # the catalog copy is sealed, the key file travels with the devices
        assert not (d / "catalog" / "catalog.sqlite").exists()
        sealed = (d / "catalog" / "catalog.sqlite.sealed").read_bytes()
        assert sealed.startswith(b"PBKC") and SECRET_NAME.encode() not in sealed
        assert len(list((d / "keys").glob("*.json"))) == 1
    # the catalog and its key are lost: the devices and the passphrase are enough
    (tmp_path / "cat.sqlite").unlink()
    key_path(tmp_path / "cat.sqlite").unlink()
    new = tmp_path / "new.sqlite"
    devargs = [a for d in devs for a in ("-d", str(d))]
    wrong = run_cli(
        "rebuild-catalog", *devargs, "--catalog", str(new), env={"PARBACKUP_PASSWORD": "x"}
    )
    assert wrong.code == 1 and "wrong passphrase" in wrong.err
    assert not new.exists() and not key_path(new).exists()
    rebuilt = run_cli("rebuild-catalog", *devargs, "--catalog", str(new), "--json", env=PW)
    assert rebuilt.code == 0, rebuilt.err
    doc = json.loads(rebuilt.out)
    assert [s["status"] for s in doc["sets"]] == ["complete"]
    restored = run_cli("restore", "--catalog", str(new), "--target", str(tmp_path / "out"), env=PW)
    assert restored.code == 0, restored.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


def test_rebuild_names_a_tampered_record(tmp_path: Path) -> None:
    _src, devs, _base = setup(tmp_path, "--encrypt")
    vol, pos, rec = _payload_record(devs)
    data = bytearray(vol.read_bytes())
    data[pos + len(rec.encode()) + rec.stored // 2] ^= 0x80
    vol.write_bytes(bytes(data))
    new = tmp_path / "new.sqlite"
    devargs = [a for d in devs for a in ("-d", str(d))]
    rebuilt = run_cli("rebuild-catalog", *devargs, "--catalog", str(new), "--json", env=PW)
    assert rebuilt.code == 3, rebuilt.err
    (s,) = json.loads(rebuilt.out)["sets"]
    assert s["status"] == "degraded"
    assert any("authentication failed" in d["error"] for d in s["damaged"])


def test_extended_attributes_of_an_encrypted_set_are_sealed_and_rebuilt(tmp_path: Path) -> None:
    """The kind-8 meta record of an encrypted set hides the file's name and attributes,
    and rebuild-catalog unseals it: the attribute comes back from the devices alone."""
    src = sample_tree(tmp_path / "src")
    target = src / "docs" / SECRET_NAME
    try:
        os.setxattr(target, "user.secret", b"attribute-value-to-hide")
    except OSError as exc:
        pytest.skip(f"no user extended attributes here: {exc}")
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    devargs = [a for d in devs for a in ("-d", str(d))]
    cat = tmp_path / "cat.sqlite"
    out = run_cli("backup", str(src), *devargs, "--catalog", str(cat), "--encrypt", env=PW)
    assert out.code == 0, out.err
    for vol in volumes(devs):
        data = vol.read_bytes()
        assert b"attribute-value-to-hide" not in data and b"user.secret" not in data
        assert SECRET_NAME.encode() not in data
    new = tmp_path / "new.sqlite"
    rebuilt = run_cli("rebuild-catalog", *devargs, "--catalog", str(new), env=PW)
    assert rebuilt.code == 0, rebuilt.err
    out_dir = tmp_path / "out"
    restored = run_cli("restore", "--catalog", str(new), "--target", str(out_dir), env=PW)
    assert restored.code == 0, restored.err
    back = restored_root(out_dir, src) / "docs" / SECRET_NAME
    assert os.getxattr(back, "user.secret") == b"attribute-value-to-hide"


def test_an_encrypted_set_with_parity_shows_no_name_on_any_device(tmp_path: Path) -> None:
    """Parity devices get the sealed catalog copy too, and the set restores with a data
    device lost (parity is over the volumes' sealed bytes)."""
    src = sample_tree(tmp_path / "src")
    devs = [tmp_path / f"d{i}" for i in range(3)]
    for d in devs:
        d.mkdir()
    devargs = [a for d in devs for a in ("-d", str(d))]
    cat = ["--catalog", str(tmp_path / "cat.sqlite")]
    out = run_cli("backup", str(src), *devargs, *cat, "--encrypt", "--parity", "1", "--json",
                  env=PW)  # fmt: skip
    assert out.code == 0, out.err
    assert json.loads(out.out)["parity"]["redundancy"] == 1
    for d in devs:
        for p in d.rglob("*"):
            if p.is_file():
                assert SECRET_NAME.encode() not in p.read_bytes(), p
    shutil.rmtree(devs[0])
    restored = run_cli("restore", *cat, "--target", str(tmp_path / "out"), env=PW)
    assert restored.code in (0, 3), restored.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


def test_incremental_reuses_sealed_records_only(tmp_path: Path) -> None:
    """The first encrypted set after a plain one copies everything again (no encrypted set
    points at plaintext records); a later encrypted incremental reuses sealed records."""
    src, devs, base = setup(tmp_path)  # plain full backup
    devargs = [a for d in devs for a in ("-d", str(d))]
    first = run_cli("backup", str(src), *devargs, *base, "--incremental", "--encrypt", "--json",
                    env=PW)  # fmt: skip
    assert first.code == 0, first.err
    assert json.loads(first.out)["reused"] == 0
    (src / "small").write_bytes(b"changed")
    second = run_cli("backup", str(src), *devargs, *base, "--incremental", "--json", env=PW)
    assert second.code == 0, second.err
    assert json.loads(second.out)["reused"] > 1_000_000
    restored = run_cli("restore", "--target", str(tmp_path / "out"), *base, env=PW)
    assert restored.code == 0, restored.err
    assert snapshot(restored_root(tmp_path / "out", src)) == snapshot(src)


def test_key_material_never_in_output_logs_or_catalog(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    _src, devs, base = setup(tmp_path, "--encrypt", "-v", "--log-file", str(log))
    outs = []
    for args in (["verify", "--json"], ["restore", "--target", str(tmp_path / "out"), "--json"],
                 ["sets", "--json"], ["key", "list", "--json"]):  # fmt: skip
        out = run_cli("-v", "--log-file", str(log), *args, *base, env=PW)
        assert out.code == 0, out.err
        outs += [out.out, out.err]
    keyfile = KeyFile.load(key_path(tmp_path / "cat.sqlite"))
    assert keyfile is not None
    master, _slot = keyfile.unlock(PW["PARBACKUP_PASSWORD"].encode())
    blobs = [log.read_bytes(), (tmp_path / "cat.sqlite").read_bytes(), *(o.encode() for o in outs)]
    blobs += [p.read_bytes() for d in devs for p in d.rglob("*") if p.is_file()]
    for blob in blobs:
        assert master not in blob and master.hex().encode() not in blob
        assert PW["PARBACKUP_PASSWORD"].encode() not in blob
    assert log.stat().st_size > 0


def test_verify_authenticates_names_and_volume_metadata(tmp_path: Path) -> None:
    """What no restore reads is still checked by verify: a sealed directory record (its
    name) and the sealed set metadata of a volume header, each changed with its CRC
    made right again, as an attacker would."""
    _src, devs, base = setup(tmp_path, "--encrypt")
    vol, pos, rec = next(
        (v, p, r) for v in volumes(devs) for p, r in _records(v) if r.kind == "dir"
    )
    data = bytearray(vol.read_bytes())
    data[pos + len(rec.encode()) + rec.stored // 2] ^= 0x04
    vol.write_bytes(bytes(data))
    verified = run_cli("verify", *base, "--json", env=PW)
    assert verified.code == 1
    assert any("authentication failed" in d["error"] for d in _damaged(verified)), verified.out

    other = next(v for v in volumes(devs) if v != vol)
    data = bytearray(other.read_bytes())
    with other.open("rb") as fh:
        head = read_volume_header(fh)
    sealed = bytearray(base64.b64decode(head.meta["sealed"]))
    sealed[5] ^= 0x01
    meta = {**head.meta, "sealed": base64.b64encode(bytes(sealed)).decode()}
    forged = dataclasses.replace(head, meta=meta).encode()
    assert len(forged) == head.length
    data[: head.length] = forged
    other.write_bytes(bytes(data))
    verified = run_cli("verify", *base, "--json", env=PW)
    assert verified.code == 1
    assert "authentication failed" in verified.out


def test_compressed_sets_stay_readable_after_the_catalog_gets_a_key(tmp_path: Path) -> None:
    src, devs, base = setup(tmp_path, "--compression", "3")
    first = json.loads(run_cli("sets", *base, "--json").out)["sets"][0]["set"]
    devargs = [a for d in devs for a in ("-d", str(d))]
    enc = run_cli("backup", str(src), *devargs, *base, "--encrypt", env=PW)
    assert enc.code == 0, enc.err
    for ref in (first, "latest"):
        out = tmp_path / f"out-{ref}"
        restored = run_cli("restore", "--set", ref, "--target", str(out), *base, env=PW)
        assert restored.code == 0, restored.err
        assert snapshot(restored_root(out, src)) == snapshot(src)


def test_sealed_catalog_copy_opens_with_the_device_key(tmp_path: Path) -> None:
    src, devs, _base = setup(tmp_path, "--encrypt")
    sealed = devs[0] / "catalog" / "catalog.sqlite.sealed"
    (keyfile,) = (devs[0] / "keys").glob("*.json")
    out = tmp_path / "opened.sqlite"
    args = ["key", "open-catalog", str(sealed), str(out), "--key-file", str(keyfile)]
    wrong = run_cli(*args, env={"PARBACKUP_PASSWORD": "nope"})
    assert wrong.code == 1 and "wrong passphrase" in wrong.err and not out.exists()
    opened = run_cli(*args, env=PW)
    assert opened.code == 0, opened.err
    sets = run_cli("sets", "--catalog", str(out), "--json")
    assert sets.code == 0 and json.loads(sets.out)["sets"][0]["status"] == "complete"
    restored = run_cli("restore", "--catalog", str(out), "--target", str(tmp_path / "o"), env=PW)
    assert restored.code == 0, restored.err
    assert snapshot(restored_root(tmp_path / "o", src)) == snapshot(src)
    bad = bytearray(sealed.read_bytes())
    bad[len(bad) // 2] ^= 1
    sealed.write_bytes(bytes(bad))
    tampered = run_cli(*args[:3], str(tmp_path / "t.sqlite"), *args[4:], env=PW)
    assert tampered.code == 1 and "authentication failed" in tampered.err
    assert not (tmp_path / "t.sqlite").exists()


def _prompted(args: list[str], typed: bytes) -> tuple[int, str]:
    """Run parbackup on a real terminal (its controlling tty), type ``typed`` once it asks
    for the passphrase; its exit code and everything the terminal showed."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PARBACKUP_PASSWORD")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parbackup", *args],
        env={**env, "PYTHONPATH": SRC, "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    shown = b""
    while b"Passphrase:" not in shown:
        chunk = os.read(master, 4096)
        assert chunk, shown
        shown += chunk
    os.write(master, typed)
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=60), shown.decode(errors="replace")


def test_passphrase_prompt_on_a_terminal(tmp_path: Path) -> None:
    _src, _devs, base = setup(tmp_path, "--encrypt")
    code, shown = _prompted(["verify", *base], PW["PARBACKUP_PASSWORD"].encode() + b"\n")
    assert code == 0, shown
    assert PW["PARBACKUP_PASSWORD"] not in shown  # not echoed
    code, shown = _prompted(["verify", *base], b"\x04")  # Ctrl-D: nothing typed
    assert code == 2 and "no passphrase was typed" in shown, shown
    assert "Traceback" not in shown and "internal error" not in shown

"""Encryption with a catalog on PostgreSQL (issue 13, C3), end to end on a real server.

A server catalog has no file beside it for ``<catalog>.key``: its key file is kept in the
catalog's ``meta`` table (engine/keystore.py), so every host sharing the catalog finds
it, and a copy still lies on every device. Two "hosts" here are two working
directories: what one backs up, the other restores, verifies and rotates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, CliResult, restored_root, snapshot
from parbackup.catalog import open_catalog
from parbackup.crypto.keys import KeyFile, device_key_name
from parbackup.engine.keystore import KEY_META
from test_crypto_e2e import SECRET_NAME, sample_tree

pytestmark = pytest.mark.slow  # a real server, real processes, scrypt per command

PW = {"PARBACKUP_PASSWORD": "postgres passphrase"}


def cli(cwd: Path, *args: str, env: dict | None = None) -> CliResult:
    """``parbackup ARGS`` run in ``cwd`` (one host's working directory)."""
    proc = subprocess.run(
        [sys.executable, "-m", "parbackup", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
        timeout=300,
    )
    return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def meta_key(url: str) -> KeyFile:
    with open_catalog(url, create=False) as catalog:
        text = catalog.meta(KEY_META)
    assert text is not None, "the catalog keeps no key"
    return KeyFile.from_json(text.encode())


def no_clear_text_on(devs: list[Path]) -> None:
    """No name from the tree and no catalog in the clear on any device."""
    for d in devs:
        assert not (d / "catalog" / "catalog.sqlite").exists(), d
        for p in d.rglob("*"):
            if p.is_file():
                assert SECRET_NAME.encode() not in p.read_bytes(), p


def test_encrypted_sets_on_a_postgres_catalog_keep_their_key_in_it(
    tmp_path, device_dirs, pg_server, pg_url
):
    src = sample_tree(tmp_path / "src")
    devs = device_dirs(2)
    dargs = [a for d in devs for a in ("-d", str(d))]
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    host_a.mkdir()
    host_b.mkdir()
    r = cli(host_a, "backup", str(src), *dargs, "--catalog", pg_url, "--encrypt", "--json",
            env=PW)  # fmt: skip
    assert r.code == 0, r.err
    first = r.json["set"]
    assert list(host_a.iterdir()) == []  # no key file beside a "path" made of the URL
    keyfile = meta_key(pg_url)
    for d in devs:  # and a copy on every device, the same key
        copy = KeyFile.from_json((d / device_key_name(keyfile.key_id)).read_bytes())
        assert copy.to_json() == keyfile.to_json()
    assert PW["PARBACKUP_PASSWORD"] not in keyfile.to_json().decode()
    no_clear_text_on(devs)

    # another host: a wrong passphrase reads nothing; the right one restores and verifies
    out = host_b / "out"
    r = cli(host_b, "restore", "--catalog", pg_url, "--target", str(out),
            env={"PARBACKUP_PASSWORD": "wrong"})  # fmt: skip
    assert r.code == 1 and "wrong passphrase" in r.err, r.err
    assert not out.exists()
    r = cli(host_b, "restore", "--catalog", pg_url, "--target", str(out), env=PW)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, src)) == snapshot(src)
    r = cli(host_b, "verify", "--catalog", pg_url, "--json", env=PW)
    assert r.code == 0, r.out + r.err

    # a later set from that host is encrypted with the same key without --encrypt
    (src / "docs" / "later.txt").write_text("a later file\n")
    r = cli(host_b, "backup", str(src), *dargs, "--catalog", pg_url, "--json", env=PW)
    assert r.code == 0, r.err
    no_clear_text_on(devs)
    assert meta_key(pg_url).key_id == keyfile.key_id
    # forget the first set and prune: the refreshed catalog copies stay sealed
    r = cli(host_b, "forget", "--keep-last", "1", "--prune", "--catalog", pg_url, "--json",
            env=PW)  # fmt: skip
    assert r.code == 0, r.err
    with open_catalog(pg_url, create=False) as catalog:
        assert first not in {s.id for s in catalog.sets()}
    no_clear_text_on(devs)
    assert all((d / "catalog" / "catalog.sqlite.sealed").exists() for d in devs)

    # rebuild-catalog into an empty PostgreSQL catalog: the key goes into its meta table
    rebuilt = pg_server.create_db("pg_crypto_rebuilt")
    r = cli(host_b, "rebuild-catalog", *dargs, "--catalog", rebuilt, "--json", env=PW)
    assert r.code == 0, r.out + r.err
    assert meta_key(rebuilt).key_id == keyfile.key_id
    assert list(host_b.iterdir()) == [out]
    again = host_a / "again"
    r = cli(host_a, "restore", "--catalog", rebuilt, "--target", str(again), env=PW)
    assert r.code == 0, r.err
    assert snapshot(restored_root(again, src)) == snapshot(src)

    # rotation on the shared catalog, from either host
    (tmp_path / "new-pw").write_text("the new passphrase\n")
    r = cli(host_a, "key", "add", "--catalog", pg_url, "--new-password-file",
            str(tmp_path / "new-pw"), "--json", env=PW)  # fmt: skip
    assert r.code == 0, r.err
    r = cli(host_b, "key", "remove", "1", "--catalog", pg_url, "--password-file",
            str(tmp_path / "new-pw"), "--json")  # fmt: skip
    assert r.code == 0, r.err
    r = cli(host_b, "key", "list", "--catalog", pg_url, "--json")
    assert r.code == 0 and [s["slot"] for s in r.json["slots"]] == [2], r.out + r.err
    r = cli(host_a, "verify", "--catalog", pg_url, env=PW)
    assert r.code == 1 and "wrong passphrase" in r.err, r.err
    r = cli(host_a, "verify", "--catalog", pg_url, "--password-file", str(tmp_path / "new-pw"))
    assert r.code == 0, r.out + r.err
    assert list(host_a.iterdir()) == [again]

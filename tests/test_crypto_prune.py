"""Prune compacts encrypted volumes and they stay readable (issue 13): records are bound
to their set, file, offset, device and volume, not to their byte position, so prune can
move them byte for byte without the key. Same killed-and-resumed runs as
tests/test_reclaim.py, with encryption on."""

from __future__ import annotations

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from killpoints import TOLD, change_a_file_held_whole, killed_run
from parbackup.crypto.keys import KeyFile, key_path

pytestmark = pytest.mark.slow  # end to end, real processes

PW = {"PARBACKUP_PASSWORD": "prune passphrase"}
ENCRYPTED_RUN = (
    TOLD
    + """
import sys
from parbackup.crypto.codec import CodecSpec
from parbackup.crypto.compress import AUTO
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.engine.report import BackupOptions
from parbackup.engine.backup import run_backup

keyfile = KeyFile.load(key_path(sys.argv[1]))
master, _ = keyfile.unlock(b"prune passphrase")
codec = CodecSpec(AUTO, master, keyfile.key_id)
with Catalog(sys.argv[1]) as catalog:
    run_backup([sys.argv[2]], sys.argv[3:], catalog,
               BackupOptions(checkpoint_bytes=256 << 10, chunk=128 << 10, codec=codec,
                             key_file=keyfile.to_json()))
"""
)


def test_prune_compacts_encrypted_volumes_that_stay_readable(tmp_path, device_dirs):
    tree = make_tree(tmp_path / "src", seed=78, files=160, max_size=200_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    keyfile, _master = KeyFile.create(PW["PARBACKUP_PASSWORD"].encode())
    keyfile.save(key_path(cat))
    for n in range(3):
        paused = killed_run(tmp_path, n, cat, tree, devs, "2MiB", ENCRYPTED_RUN)
        assert paused, f"run {n} ended unpaused"
    # a file the last run holds whole next to others, changed: that volume is partly
    # live once the set is complete, whatever tails the kills left (they may be short)
    change_a_file_held_whole(cat, tree)
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli("backup", str(tree), *dargs, "--catalog", cat, "--json", env=PW)
    assert r.code == 0, r.err
    assert r.json["status"] == "complete" and r.json["reused"] > 0
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json", env=PW)
    assert r.code == 0, r.err
    assert r.json["compacted"], r.json
    r = run_cli("verify", "--catalog", cat, "--json", env=PW)
    assert r.code == 0, r.out
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat, env=PW)
    assert r.code == 0, r.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)

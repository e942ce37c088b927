"""``key remove`` killed half way, then run again: the removed passphrase must open no
copy of the key file, neither the catalog's nor any device's (E1), and prune reclaims the
half-written copy the killed run left (M2)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, make_tree, run_cli
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.errors import KeyUnlockError

pytestmark = pytest.mark.slow
STRACE = shutil.which("strace")


def _opens(path: Path, passphrase: bytes) -> bool:
    keyfile = KeyFile.load(path)
    assert keyfile is not None, path
    try:
        keyfile.unlock(passphrase)
    except KeyUnlockError:
        return False
    return True


@pytest.mark.skipif(not STRACE, reason="needs strace")
@pytest.mark.parametrize("when", [1, 2, 3])
def test_a_killed_key_remove_run_again_leaves_no_copy_the_old_passphrase_opens(
    tmp_path, device_dirs, when
):
    """The catalog's key file and the copy on each of two devices are each replaced by
    a rename: the command is SIGKILLed by the kernel as it enters its 1st, 2nd or 3rd
    ``rename``. Before, the catalog's key went first: killed after it, the rerun said
    "no slot 1" and both devices kept a copy the removed passphrase opens (and restore
    from the devices alone takes any copy that opens)."""
    src = make_tree(tmp_path / "src", seed=1, files=5, max_size=10_000)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    old, new = tmp_path / "old.pw", tmp_path / "new.pw"
    old.write_text("old passphrase\n")
    new.write_text("new passphrase\n")
    dargs = [a for d in devs for a in ("-d", str(d))]
    r = run_cli(
        "backup", str(src), *dargs, "--catalog", cat, "--encrypt", "--password-file", str(old)
    )
    assert r.code == 0, r.out + r.err
    r = run_cli(
        "key", "add", "--catalog", cat, "--password-file", str(old), "--new-password-file", str(new)
    )
    assert r.code == 0, r.out + r.err
    copies = [key_path(cat), *[p for d in devs for p in (d / "keys").glob("*.json")]]
    assert len(copies) == 3 and all(_opens(p, b"old passphrase") for p in copies)
    proc = subprocess.run(
        [STRACE, "-qq", "-o", "/dev/null", "-e", "trace=rename",
         "-e", f"inject=rename:signal=SIGKILL:when={when}",
         sys.executable, "-m", "parbackup", "key", "remove", "1", "--catalog", cat,
         "--password-file", str(new)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
    )  # fmt: skip
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.stderr.decode()
    r = run_cli("key", "remove", "1", "--catalog", cat, "--password-file", str(new))
    assert r.code == 0, r.out + r.err
    assert [p for p in copies if _opens(p, b"old passphrase")] == []
    assert all(_opens(p, b"new passphrase") for p in copies)
    # the killed run's half-written copy (keys/<id>.json.tmp-PID) is garbage prune
    # reclaims: before, it stayed for good
    r = run_cli("prune", "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert [p for d in devs for p in (d / "keys").iterdir() if ".tmp-" in p.name] == []

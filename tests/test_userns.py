"""Root inside a user namespace (``unshare --user --map-root-user``): backup and restore.

There root maps only its own uid: files of other owners show up as the overflow uid
(65534), reading a 0600 file of an unmapped owner is refused, and ``chown`` to an
unmapped uid fails with EINVAL. Restore used to stop at the first such ``chown`` with a
bare "Invalid argument" (exit 1, most files missing). Now the data, modes and times are
all restored, and each owner that could not be given is named (exit 3); a file the
backup could not read is named skipped, never fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import SRC, restored_root

pytestmark = pytest.mark.root


def in_userns(*args: str, cwd) -> subprocess.CompletedProcess:
    """``python -m parbackup ARGS`` as root of a new user namespace."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-m", "parbackup", *args],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def userns_ok(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (util-linux)")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available: {probe.stderr.decode().strip()}")


def test_backup_and_restore_as_namespace_root(tmp_path, userns_ok):
    tmp_path.chmod(0o755)
    src = tmp_path / "src"
    (src / "theirs").mkdir(parents=True)
    files = {
        "mine": (b"mine" * 1000, 0o640, 0, 0),
        "theirs/readable": (b"readable" * 5000, 0o644, 1000, 1000),
        "theirs/other": (os.urandom(70_000), 0o664, 1234, 55),
        "secret": (b"private", 0o600, 1000, 1000),
    }
    for rel, (data, mode, uid, gid) in files.items():
        p = src / rel
        p.write_bytes(data)
        p.chmod(mode)
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        os.chown(p, uid, gid)
    os.chown(src / "theirs", 1000, 1000)
    os.mkfifo(src / "theirs" / "pipe", 0o640)
    os.chown(src / "theirs" / "pipe", 1000, 1000)
    os.symlink("readable", src / "theirs" / "link")
    os.chown(src / "theirs" / "link", 1000, 1000, follow_symlinks=False)
    for d in ("d0", "d1"):
        (tmp_path / d).mkdir()
    args = ["--catalog", "cat.sqlite", "--json"]

    r = in_userns("backup", str(src), "-d", "d0", "-d", "d1", *args, cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr  # the unreadable file, named
    doc = json.loads(r.stdout)
    assert doc["status"] == "complete"
    assert [s["path"] for s in doc["skipped"]] == [str(src / "secret")]

    r = in_userns("restore", "--target", "out", *args, cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["damaged"] == []
    owners = {d["path"]: d["error"] for d in doc["left_out"]}
    foreign = {"theirs", "theirs/readable", "theirs/other", "theirs/link", "theirs/pipe"}
    assert set(owners) == {str(src / rel) for rel in foreign}
    assert all("owner 65534:65534 could not be set" in e for e in owners.values())
    assert [d["path"] for d in doc["skipped"]] == [str(src / "secret")]  # not in the set
    back = restored_root(tmp_path / "out", src)
    for rel, (data, mode, _uid, _gid) in files.items():
        if rel == "secret":
            assert not (back / rel).exists()
            continue
        st = (back / rel).stat()
        assert (back / rel).read_bytes() == data
        assert stat.S_IMODE(st.st_mode) == mode
        assert st.st_mtime_ns == 1_600_000_000_000_000_000
    assert os.readlink(back / "theirs" / "link") == "readable"
    assert stat.S_ISFIFO((back / "theirs" / "pipe").lstat().st_mode)

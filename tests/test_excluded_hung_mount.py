"""An excluded mount that does not answer does not hold a backup up.

The mount is a real FUSE filesystem whose daemon never answers: this test opens
/dev/fuse, mounts it, and never reads the device, so every ``stat`` of the mount waits
until the descriptor is closed (a hung NFS or sshfs mount behaves the same). The scan
used to ``stat`` every entry before asking ``--exclude``, and the bind-mount check
(engine/selecting.py) looked at every mount below the source: both waited on it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from conftest import make_tree, run_cli

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"
)


@contextlib.contextmanager
def hung_mount(point):
    """A FUSE mount at ``point`` that answers nothing while the block runs."""
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        subprocess.run(
            ["mount", "-i", "-t", "fuse", "-o",
             f"fd={fd},rootmode=40000,user_id=0,group_id=0", "hung", str(point)],
            pass_fds=[fd], check=True,
        )  # fmt: skip
        try:
            yield
        finally:
            os.close(fd)  # the connection ends: whatever waited on it fails now
            fd = -1
            subprocess.run(["umount", "-l", str(point)], check=True)
    finally:
        if fd >= 0:
            os.close(fd)


def test_an_excluded_mount_that_never_answers_is_never_looked_at(tmp_path):
    src = make_tree(tmp_path / "src", seed=5, files=6)
    (src / "nfs").mkdir()
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "catalog.sqlite")
    with hung_mount(src / "nfs"):
        r = run_cli(
            "backup", str(src), "--exclude", str(src / "nfs"), "-d", str(devs[0]),
            "-d", str(devs[1]), "--catalog", cat, "--json", timeout=60,
        )  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["status"] == "complete"
    assert r.json["excluded"] == {f"--exclude {src / 'nfs'}": 1}, r.json["excluded"]

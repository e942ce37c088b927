"""Several sources of different kinds in one set (F1): a tmpfs tree, a tree on the test
filesystem, a loop device and an SFTP tree; each restores on its own with --include."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "ram"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.slow
@pytest.mark.root
def test_four_kinds_of_source_in_one_set(tmp_path, device_dirs, tmpfs, sshd):
    ram = make_tree(tmpfs / "ramtree", seed=31, files=10)
    disk = make_tree(tmp_path / "disktree", seed=32, files=10)
    remote = make_tree(tmp_path / "remotetree", seed=33, files=10)
    image = tmp_path / "disk.img"
    content = os.urandom(3 << 20) + bytes(2 << 20) + os.urandom(1 << 20)
    image.write_bytes(content)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        devs = device_dirs(3)
        cat = str(tmp_path / "cat.sqlite")
        args = [a for d in devs for a in ("--device", str(d))]
        url = sshd.url(remote)
        r = run_cli("backup", str(ram), str(disk), loop, url, *args, "--catalog", cat, "--json")
        assert r.code == 0, r.err + r.out
        assert os.stat(ram).st_dev != os.stat(disk).st_dev

        def restore_only(what: str, name: str):
            out = tmp_path / name
            r = run_cli("restore", "--target", str(out), "--include", what, "--catalog", cat)
            assert r.code == 0, r.err + r.out
            return out

        out = restore_only(str(ram), "r1")
        assert snapshot(restored_root(out, ram)) == snapshot(ram)
        assert sorted(os.listdir(out)) == [str(ram).strip("/").split("/")[0]]
        assert not (out / str(disk).lstrip("/")).exists()
        out = restore_only(str(disk), "r2")
        assert snapshot(restored_root(out, disk)) == snapshot(disk)
        assert not (out / str(ram).lstrip("/")).exists()
        out = restore_only(loop, "r3")
        assert (out / loop.lstrip("/")).read_bytes() == content
        out = restore_only(f"/{sshd.host}{remote}", "r4")
        assert os.listdir(out) == [sshd.host]
        got = snapshot(out / sshd.host / str(remote).lstrip("/"))
        want = snapshot(remote)
        assert {k: v[:2] + v[3:] if v[0] == "file" else v for k, v in got.items()} == {
            k: v[:2] + v[3:] if v[0] == "file" else v for k, v in want.items()
        }
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)

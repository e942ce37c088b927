"""Block devices as sources (F2): a loop device backed up as one image and restored."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_cli
from fsfixtures import ext4_fixture, sh, unmount  # noqa: F401 (fixture)

MiB = 1 << 20


def _can_loop() -> str:
    if os.geteuid() != 0:
        return "needs root to attach loop devices"
    if shutil.which("losetup") is None:
        return "losetup (util-linux / mount) is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: this kernel or container has no loop devices"
    return ""


pytestmark = [pytest.mark.root, pytest.mark.skipif(bool(_can_loop()), reason=_can_loop())]


def wait_released(device: str, timeout: float = 60) -> None:
    """Wait until the kernel lets go of a block device that was just unmounted: the
    mount's claim on it may be dropped a moment after ``umount`` returns (or later, when
    it had to unmount lazily); an exclusive open tells, as it tells the restore."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            assert time.monotonic() < deadline, f"{device} still in use after its unmount"
            time.sleep(0.01)


@pytest.fixture
def loop(tmp_path):
    """attach(path) -> /dev/loopN backed by that file; detached at the end."""
    attached: list[str] = []

    def attach(image: Path) -> str:
        dev = subprocess.run(
            ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        attached.append(dev)
        return dev

    yield attach
    for dev in attached:
        subprocess.run(["losetup", "-d", dev], check=False)


def image_content() -> bytes:
    """Random data with zero runs, some not aligned to the 4 MiB record size."""
    rng = os.urandom
    return (
        rng(3 * MiB + 1234)
        + bytes(9 * MiB)
        + rng(MiB - 1234)
        + b"\xff" * 4096
        + bytes(6 * MiB - 4096)
        + rng(MiB)
        + bytes(4 * MiB)
    )


@pytest.mark.slow
def test_loop_device_backup_restore(tmp_path, device_dirs, loop):
    content = image_content()
    image = tmp_path / "disk.img"
    image.write_bytes(content)
    source = loop(image)
    devs = device_dirs(3)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    r = run_cli("backup", source, *args, "--catalog", cat, "--strategy", "threshold", "--json")
    assert r.code == 0, r.err + r.out
    doc = r.json
    assert doc["files"] == 1 and doc["bytes"] == len(content)
    assert doc["threshold"] == -(-len(content) // 3)
    assert [d["bytes"] for d in doc["devices"]] == [doc["threshold"]] * 2 + [
        len(content) - 2 * doc["threshold"]
    ]

    r = run_cli("files", "--catalog", cat, "--json")
    assert [(f["path"], f["size"]) for f in r.json["files"]] == [(source, len(content))]

    # back as a file, with its zero runs as holes
    out = tmp_path / "out"
    r = run_cli("restore", "--target", str(out), "--catalog", cat)
    assert r.code == 0, r.err + r.out
    restored = out / source.lstrip("/")
    assert restored.read_bytes() == content
    assert restored.stat().st_blocks * 512 < len(content) - 10 * MiB

    # straight onto another block device
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as fh:
        fh.write(b"\xaa" * (len(content) + MiB))
    target = loop(blank)
    r = run_cli("restore", "--target", target, "--include", source, "--catalog", cat, "--json")
    assert r.code == 0, r.err + r.out
    assert r.json["bytes"] == len(content)
    with open(target, "rb") as fh:
        back = fh.read()
    assert back[: len(content)] == content
    assert back[len(content) :] == b"\xaa" * MiB  # nothing past the image touched


def _random_image_backed_up(tmp_path, device_dirs, loop) -> str:
    """A loop device holding 2 MiB of random bytes, backed up onto 2 devices; the
    catalog's path."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(2 * MiB))
    source = loop(image)
    devs = device_dirs(2)
    cat = str(tmp_path / "cat.sqlite")
    args = [a for d in devs for a in ("--device", str(d))]
    assert run_cli("backup", source, *args, "--catalog", cat).code == 0
    return cat


def test_image_restore_refuses_small_target(tmp_path, device_dirs, loop):
    cat = _random_image_backed_up(tmp_path, device_dirs, loop)
    small = tmp_path / "small.img"
    small.write_bytes(bytes(MiB))
    target = loop(small)
    r = run_cli("restore", "--target", target, "--catalog", cat)
    assert r.code == 1 and "needs" in r.err
    with open(target, "rb") as fh:
        assert fh.read() == bytes(MiB)


@pytest.mark.slow
def test_image_restore_refuses_a_mounted_block_device(tmp_path, device_dirs, loop, ext4):
    """A block device that is mounted (or held by LVM, RAID, another program) is never
    written: the restore claims it with an exclusive open first, which the kernel
    refuses (EBUSY). Before, the image went straight over the mounted file system,
    exit 0."""
    cat = _random_image_backed_up(tmp_path, device_dirs, loop)
    mounted = ext4("live", 16)
    (mounted / "precious").write_bytes(b"keep me")
    target = sh("findmnt", "-n", "-o", "SOURCE", str(mounted)).stdout.strip()
    with open(target, "rb") as fh:
        before = hashlib.sha256(fh.read()).digest()
    r = run_cli("restore", "--target", target, "--catalog", cat)
    assert r.code == 1 and "is in use" in r.err and "Traceback" not in r.err, r.err
    with open(target, "rb") as fh:
        assert hashlib.sha256(fh.read()).digest() == before
    assert (mounted / "precious").read_bytes() == b"keep me"
    # unmounted, the same device takes the image
    unmount(mounted)
    wait_released(target)
    r = run_cli("restore", "--target", target, "--catalog", cat)
    assert r.code == 0, r.err
    with open(target, "rb") as fh:
        assert fh.read(2 * MiB) == (tmp_path / "disk.img").read_bytes()

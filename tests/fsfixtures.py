"""Real filesystems that fail on demand: tmpfs that fills up, ext4 on a loop device that
is shut down or mounted read-only, a device-mapper target swapped for ``error``.

Each maker is a pytest fixture returning a factory (import ``*_fixture`` into a test
module to use it under its short name); everything it mounts or attaches is
undone at teardown even when the test failed (lazy unmount as a last resort). Tests skip
with the reason when not root or a tool or kernel feature is missing.

``Gate`` pairs with the ``faulty+`` wrapper's ``pause_after=SIZE&gate=PATH``: the backup
stops at a known point, the test makes the real fault, then lets it go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def require_root(*tools: str) -> None:
    """Skip unless running as root with every tool on PATH (or in /usr/sbin, /sbin)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, loop devices)")
    for tool in tools:
        if not _which(tool):
            pytest.skip(f"needs {tool} (see scripts/setup)")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a system tool; a failure shows its stderr."""
    tool = _which(args[0]) or args[0]
    proc = subprocess.run([tool, *args[1:]], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def unmount(path: Path) -> None:
    """Unmount, lazily if it is busy."""
    if sh("umount", str(path), check=False).returncode != 0:
        sh("umount", "-l", str(path), check=False)


@pytest.fixture(name="tmpfs")
def tmpfs_fixture(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, size)`` mounts a tmpfs of ``size`` (e.g. "8m") at tmp_path/name."""
    require_root("mount", "umount")
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        unmount(path)


@pytest.fixture(name="ext4")
def ext4_fixture(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``ext4(name, size_mb, readonly=False, inode_size=None)``: an ext4 image on a loop
    device, mounted with ``errors=remount-ro`` (so ``turn_read_only`` works on it);
    ``inode_size=128`` keeps times in whole seconds."""
    require_root("mount", "umount", "losetup", "mkfs.ext4")
    undo = contextlib.ExitStack()

    def make(
        name: str, size_mb: int = 64, readonly: bool = False, inode_size: int | None = None
    ) -> Path:
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as fh:
            fh.truncate(size_mb << 20)
        sizes = ["-I", str(inode_size)] if inode_size else []
        init = "lazy_itable_init=0,lazy_journal_init=0"
        sh("mkfs.ext4", "-q", "-F", *sizes, "-E", init, str(image))
        loop = sh("losetup", "--find", "--show", str(image)).stdout.strip()
        undo.callback(sh, "losetup", "-d", loop, check=False)
        path = tmp_path / name
        path.mkdir()
        sh("mount", "-o", "ro" if readonly else "errors=remount-ro", loop, str(path))
        undo.callback(unmount, path)
        return path

    with undo:
        yield make


def btrfs_missing() -> str:
    """Why a btrfs loop image cannot be mounted here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root to mount a btrfs loop image"
    for tool in ("mkfs.btrfs", "btrfs", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian btrfs-progs; scripts/setup installs it)"
    if "btrfs" not in Path("/proc/filesystems").read_text():
        return "this kernel has no btrfs"
    return ""


@pytest.fixture(name="subvolume")
def subvolume_fixture(tmp_path: Path) -> Iterator[Path]:
    """A btrfs subvolume on a mounted loop image; unmounted and detached afterwards."""
    image, mnt = tmp_path / "btrfs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            vol = mnt / "vol"
            subprocess.run(
                ["btrfs", "subvolume", "create", str(vol)], check=True, capture_output=True
            )
            yield vol
        finally:
            unmount(mnt)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def shut_down(mountpoint: Path) -> None:
    """Make an ext4 filesystem fail every later operation with EIO (EXT4_IOC_SHUTDOWN),
    as a disk that died under it would."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def power_cut(mountpoint: Path) -> None:
    """Lose what an ext4 filesystem had not made durable, as a power cut would: it is
    shut down without its journal flushed (``shut_down``), unmounted and mounted again
    from the same device, which replays only the transactions committed before. Mount
    it with ``commit=600`` (``mount -o remount,commit=600``) so no periodic commit makes
    durable what nobody synced."""
    source = sh("findmnt", "-n", "-o", "SOURCE", str(mountpoint)).stdout.strip()
    shut_down(mountpoint)
    sh("umount", str(mountpoint))
    sh("mount", "-o", "errors=remount-ro", source, str(mountpoint))


def turn_read_only(mountpoint: Path) -> None:
    """Make ext4 record an error (sysfs ``trigger_fs_error``); mounted with
    ``errors=remount-ro`` it turns read-only at once: later writes fail with EROFS.
    (``mount -o remount,ro`` would refuse while the backup holds a file open.)"""
    st = os.stat(mountpoint)
    dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve().name
    Path(f"/sys/fs/ext4/{dev}/trigger_fs_error").write_text("parbackup test: disk error\n")


def fill_up(mountpoint: Path) -> None:
    """Another process writes into the filesystem until it is full (ENOSPC)."""
    filler = mountpoint / "filler"
    proc = subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, text=True
    )
    assert "No space left on device" in proc.stderr, proc.stderr


def have_device_mapper() -> bool:
    """True when dmsetup can talk to the kernel's device-mapper."""
    return bool(_which("dmsetup")) and sh("dmsetup", "version", check=False).returncode == 0


@pytest.fixture(name="dm_ext4")
def dm_ext4_fixture(
    tmp_path: Path,
) -> Iterator[Callable[[str, int], tuple[Path, Callable[[], None]]]]:
    """``dm_ext4(name, size_mb)`` -> (mountpoint, break_it): ext4 on a device-mapper
    ``linear`` target over a loop device; ``break_it()`` swaps in the ``error`` target,
    so every later read and write of the disk fails with EIO."""
    require_root("mount", "umount", "losetup", "mkfs.ext4", "dmsetup")
    if not have_device_mapper():
        pytest.skip("the kernel has no device-mapper (dmsetup cannot reach it)")
    undo = contextlib.ExitStack()

    def make(name: str, size_mb: int = 64) -> tuple[Path, Callable[[], None]]:
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as fh:
            fh.truncate(size_mb << 20)
        loop = sh("losetup", "--find", "--show", str(image)).stdout.strip()
        undo.callback(sh, "losetup", "-d", loop, check=False)
        sectors = (size_mb << 20) // 512
        dm = f"parbackup-test-{os.getpid()}-{name}"
        sh("dmsetup", "create", dm, "--table", f"0 {sectors} linear {loop} 0")
        undo.callback(sh, "dmsetup", "remove", "--force", dm, check=False)
        sh("mkfs.ext4", "-q", "-F", f"/dev/mapper/{dm}")
        path = tmp_path / name
        path.mkdir()
        sh("mount", f"/dev/mapper/{dm}", str(path))
        undo.callback(unmount, path)

        def break_it() -> None:
            sh("dmsetup", "suspend", "--noflush", dm)
            sh("dmsetup", "load", dm, "--table", f"0 {sectors} error")
            sh("dmsetup", "resume", dm)

        return path, break_it

    with undo:
        yield make


class Gate:
    """The file pair a ``faulty+...?pause_after=SIZE&gate=PATH`` device waits on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def wait_paused(self, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
        """Wait until the device has stopped at its pause point (the flag file it makes
        there, looked for every 10 ms); fail at once, with what it said, if ``proc`` (the
        run) ended first. The deadline only bounds a run that hangs."""
        flag = Path(f"{self.path}.paused")
        deadline = time.monotonic() + timeout
        while not flag.exists():
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the run ended ({proc.returncode}) before it paused:"
                                     f" {out!s:.2000} {err!s:.2000}")  # fmt: skip
            assert time.monotonic() < deadline, f"{flag} never appeared"
            time.sleep(0.01)

    def open(self) -> None:
        """Let the device go on."""
        self.path.touch()

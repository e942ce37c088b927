"""Disks that give their rate once per DEVICE, for benchmarks (run as root).

``?limit=RATE`` (devices/throttle.py) holds each open handle to RATE, so two readers of
one device get the rate twice. A disk, a tape drive or a link does not. Here a device
is a directory on an ext4 file system on its own loop device (the backing file on a
tmpfs the caller gives), and ``ReadLimit`` puts a command's processes into a blkio
cgroup that holds every read of those block devices to RATE in all, whoever reads:
cgroup v2 ``io.max rbps`` where the ``io`` controller is there, else cgroup v1
``blkio.throttle.read_bps_device`` (reads are throttled in the reading process's
context in both). Every loop device, mount and cgroup made here is removed on exit.

``forget(path)`` drops a directory tree's pages from the page cache (per file,
``POSIX_FADV_DONTNEED`` after a sync), so a restore reads the disk and not memory,
without dropping the whole machine's caches under other users' feet.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from common import remove_cgroup

BLKIO = Path("/sys/fs/cgroup/blkio")


@contextlib.contextmanager
def loop_ext4(mountpoint: str, backing_dir: str, size_mb: int) -> Iterator[str]:
    """An ext4 file system of ``size_mb`` on a fresh loop device (its backing file in
    ``backing_dir``), mounted at ``mountpoint`` for the block; yields the loop device."""
    os.makedirs(mountpoint, exist_ok=True)
    backing = os.path.join(backing_dir, os.path.basename(mountpoint.rstrip("/")) + ".img")
    with open(backing, "wb") as fh:
        fh.truncate(size_mb << 20)
    loop = ""
    mounted = False
    try:
        loop = subprocess.run(
            ["losetup", "--find", "--show", backing], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", loop],
            check=True,
        )
        subprocess.run(["mount", "-t", "ext4", loop, mountpoint], check=True)
        mounted = True
        yield loop
    finally:
        if mounted:
            subprocess.run(["umount", mountpoint], check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        with contextlib.suppress(OSError):
            os.unlink(backing)
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def major_minor(device: str) -> str:
    """'MAJ:MIN' of a block device node."""
    st = os.stat(device)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def _v2_io_root() -> Path | None:
    """A cgroup2 directory whose children may use the ``io`` controller, if any."""
    with contextlib.suppress(OSError), open("/proc/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                root = Path(fields[1])
                if "io" in (root / "cgroup.subtree_control").read_text().split():
                    return root
    return None


class ReadLimit:
    """A cgroup holding every read of ``devices`` (block device nodes) to ``rate``
    bytes per second per device, summed over all of its processes. ``wrap(argv)``
    makes a command that joins the group before it execs (so its whole process tree,
    fork servers and readers too, is held)."""

    def __init__(self, devices: Sequence[str], rate: int, name: str) -> None:
        self.devices, self.rate, self.name = list(devices), int(rate), name
        self.path: Path | None = None
        self.kind = ""

    def __enter__(self) -> ReadLimit:
        root = _v2_io_root()
        if root is not None:
            self.path, self.kind = root / self.name, "cgroup v2 io.max"
            self.path.mkdir()
            for dev in self.devices:
                (self.path / "io.max").write_text(f"{major_minor(dev)} rbps={self.rate}\n")
        elif BLKIO.is_dir():
            self.path, self.kind = BLKIO / self.name, "cgroup v1 blkio.throttle"
            self.path.mkdir()
            for dev in self.devices:
                (self.path / "blkio.throttle.read_bps_device").write_text(
                    f"{major_minor(dev)} {self.rate}\n"
                )
        else:
            raise SystemExit("no cgroup io (v2) or blkio (v1) controller to limit reads with")
        return self

    def wrap(self, argv: Sequence[str]) -> list[str]:
        assert self.path is not None
        procs = str(self.path / "cgroup.procs")
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def read_bytes(self) -> dict[str, int]:
        """Bytes read from each device by the group's processes so far (v1 only;
        v2: from io.stat)."""
        assert self.path is not None
        out: dict[str, int] = {}
        numbers = {major_minor(d): d for d in self.devices}
        if self.kind.startswith("cgroup v2"):
            for line in (self.path / "io.stat").read_text().splitlines():
                fields = line.split()
                if fields and fields[0] in numbers:
                    stat = dict(f.split("=") for f in fields[1:])
                    out[numbers[fields[0]]] = int(stat.get("rbytes", 0))
            return out
        for line in (self.path / "blkio.throttle.io_service_bytes").read_text().splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0] in numbers and fields[1] == "Read":
                out[numbers[fields[0]]] = int(fields[2])
        return out

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            remove_cgroup(self.path)


def forget(root: str) -> None:
    """Drop the pages of every file under ``root`` from the page cache."""
    os.sync()
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, n), os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

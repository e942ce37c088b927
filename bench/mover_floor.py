"""What a mover spends per small file, against the floor of the system calls it must make.

    .venv/bin/python bench/mover_floor.py [--tree /usr/share/doc] [--rounds 4]

Scans ``--tree`` (its regular files of 1 byte to 256 KiB: the ones a mover gathers into
one large write), then, in this process and on a directory in /dev/shm, times the CPU
(user + system, best of ``--rounds``) per file of:

- ``syscalls``: open, fstat, pread, fstat, flistxattr, close (what a mover asks of the
  kernel per file: the second fstat checks the file did not change while read);
- ``+ hash``: the same plus BLAKE3 of the bytes (every record is hashed);
- ``+ gather + write``: the same plus gathering the bytes into 1 MiB writes;
- ``tar-like``: open, fstat, read, close and the gathered writes (no hash, no checks);
- ``mover``: the mover's own path (``engine/mover.py``: ``write_item`` for every file,
  record headers, references, then the commit), fed items as the dispatcher builds them.

The difference between ``mover`` and ``+ gather + write`` is the mover's Python per file.
No root needed; the machine's load moves every figure, the differences less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from blake3 import blake3

from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.engine import mover as mv
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.messages import Begin, MoverSpec
from parbackup.engine.prepare import scan, source_specs
from parbackup.entries import FILE

SMALL = 256 * 1024
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _Channel:
    """The dispatcher's end, reduced to keeping what the mover says."""

    def __init__(self) -> None:
        self.said: list = []

    def send(self, msg: object) -> None:
        self.said.append(msg)

    def poll(self, timeout: float = 0.0) -> bool:
        return False


def best_cpu(fn: Callable[[], None], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", default="/usr/share/doc")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    specs = source_specs([args.tree])
    e = scan(specs, [])
    blob, at, roots, links = e.blobs()
    rows = [f for f in range(len(e)) if e.kind[f] == FILE and 0 < e.size[f] <= SMALL]
    items = [
        (seq, f, 0, e.size[f], e.kind[f], e.size[f], e.mode[f], e.uid[f], e.gid[f],
         e.mtime_ns[f], e.ctime_ns[f], e.ino[f], e.dev[f], e.source[f],
         roots.get(e.source[f], b"") + blob[at[f] : at[f + 1]], links.get(f, b""), None, b"")
        for seq, f in enumerate(rows, 1)
    ]  # fmt: skip
    paths = [i[14] for i in items]
    nbytes = sum(i[3] for i in items)
    work = "/dev/shm/parbackup-mover-floor"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    buf = memoryview(bytearray(SMALL))
    out = os.open(f"{work}/out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def calls(hashing: bool, writing: bool, checks: bool = True) -> Callable[[], None]:
        def run() -> None:
            os.ftruncate(out, 0)
            os.lseek(out, 0, 0)
            gather = bytearray()
            for p in paths:
                fd = os.open(p, _OPEN)
                os.fstat(fd)
                n = os.preadv(fd, [buf], 0)
                if hashing:
                    blake3(buf[:n]).digest()
                if checks:
                    os.fstat(fd)
                    os.listxattr(fd)
                os.close(fd)
                if writing:
                    gather += buf[:n]
                    if len(gather) >= 1 << 20:
                        os.write(out, gather)
                        gather = bytearray()
            if writing:
                os.write(out, gather)

        return run

    def mover() -> None:
        dev = f"{work}/dev"
        shutil.rmtree(dev, ignore_errors=True)
        os.makedirs(dev)
        m = mv._Mover(MoverSpec(0, dev, tuple(specs)), _Channel())  # type: ignore[arg-type]
        m.device = RetryingDevice(open_device(dev))
        m.device.open()
        m.label = m.device.ensure_label().label
        m.handle(Begin(os.urandom(16), {"set": "bench"}))
        with paused_gc():  # as move() runs it
            for item in items:
                m.write_item(item)
            m.commit()
        m.device.close()

    print(f"{args.tree}: {len(items)} files of 1 B-256 KiB, {nbytes / 1e6:.0f} MB, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, fn in (
        ("syscalls", calls(False, False)),
        ("+ hash", calls(True, False)),
        ("+ gather + write", calls(True, True)),
        ("tar-like", calls(False, True, checks=False)),
        ("mover", mover),
    ):
        cpu = best_cpu(fn, args.rounds)
        print(f"  {name:18s} {cpu / len(items) * 1e6:6.1f} us a file")
    os.close(out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

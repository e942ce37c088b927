#!/usr/bin/env python3
"""The mover's cost per record with compression and encryption (issue 13), in CPU time.

CPU time of this one process (``time.process_time``), so the figures hold on a machine
other work shares (wall time there means little):

1. microseconds a mover spends per record to make its header and stored bytes (records
   of 0, 2,000 and 20,000 bytes of text): plain (BLAKE3 + header), zstd auto, encrypted
   without and with compression;
2. MB/s of CPU for 4 MiB records: zstd level 1 on one thread and on zstd's worker
   threads (records of 1 MiB and more: crypto/compress.py), AES-256-GCM sealing, keyed
   BLAKE3; with the wall-time rate beside it (the threads' gain needs idle cores).

    .venv/bin/python bench/crypto_records.py
    PARBACKUP_SRC=/elsewhere/src .venv/bin/python bench/crypto_records.py   # another tree
"""

from __future__ import annotations

import glob
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [os.environ.get("PARBACKUP_SRC") or str(ROOT / "src")]

import zstandard  # noqa: E402
from blake3 import blake3  # noqa: E402

from parbackup.crypto import aead, compress  # noqa: E402
from parbackup.crypto.codec import Codec, CodecSpec  # noqa: E402
from parbackup.crypto.compress import AUTO, OFF  # noqa: E402
from parbackup.engine import messages as m  # noqa: E402
from parbackup.engine.records import plain_header, stored_record  # noqa: E402
from parbackup.entries import FILE  # noqa: E402
from parbackup.format import checksum  # noqa: E402

FIELDS = ("FID", "FSIZE", "GID", "KIND", "LINK", "MODE", "MTIME", "PATH", "UID", "META")


def an_item(size: int) -> tuple:
    """A work item (engine/messages.py) of a regular file of ``size`` bytes."""
    item: list = [0] * (max(getattr(m, k) for k in dir(m) if k.isupper() and k.isalpha()) + 1)
    values = (5, size, 0, FILE, b"", 0o100644, 1_700_000_000 * 10**9,
              b"/usr/share/doc/package/changelog", 0, b"")  # fmt: skip
    for name, value in zip(FIELDS, values, strict=True):
        item[getattr(m, name)] = value
    return tuple(item)


def per_record() -> None:
    text = b"".join(b"line %d of some text to compress\n" % i for i in range(2000))
    sid, label, vid = secrets.token_bytes(16), "ab" * 16, secrets.token_bytes(16)
    master = secrets.token_bytes(32)
    specs = {
        "plain": None,
        "zstd auto": CodecSpec(AUTO),
        "encrypted, compression off": CodecSpec(OFF, master, b"k" * 16),
        "encrypted, zstd auto": CodecSpec(AUTO, master, b"k" * 16),
    }
    print("µs of CPU per record (header and stored bytes):")
    print(f"  {'':28}" + "".join(f"{s:>10}" for s in ("0 B", "2000 B", "20000 B")))
    for name, spec in specs.items():
        codec = Codec(spec) if spec else None
        row = []
        for size in (0, 2000, 20000):
            payload, item, n = memoryview(text[:size]), an_item(size), 20000
            started = time.process_time()
            for _ in range(n):
                if codec is None:
                    plain_header(sid, item, 0, size, checksum(payload))
                else:
                    stored_record(codec, sid, label, vid, item, 0, payload)
            row.append((time.process_time() - started) / n * 1e6)
        print(f"  {name:28}" + "".join(f"{v:10.1f}" for v in row))


def sample(limit: int) -> bytes:
    """Shared libraries and Python sources of this machine: typical compressible data."""
    out = bytearray()
    for pattern in ("/usr/lib/x86_64-linux-gnu/*.so*", f"{os.path.dirname(os.__file__)}/*.py"):
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                out += Path(path).read_bytes()
            if len(out) >= limit // 2 * (1 + pattern.endswith(".py")):
                break
    return bytes(out[:limit])


def rates(label: str, fn, chunks: list, total: int) -> None:
    best_cpu, best_wall = 1e9, 1e9
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for c in chunks:
            fn(c)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    print(f"  {label:34} {total / best_cpu / 1e6:8.0f} {total / best_wall / 1e6:8.0f}")


def per_byte() -> None:
    data = sample(48 << 20)
    chunks = [data[i : i + (4 << 20)] for i in range(0, len(data), 4 << 20)]
    threads = min(getattr(compress, "THREADS", 4), os.cpu_count() or 1)
    one = zstandard.ZstdCompressor(level=1)
    job = getattr(compress, "JOB", 1 << 20)  # as a mover compresses large records
    params = zstandard.ZstdCompressionParameters.from_level(1, threads=threads, job_size=job)
    many = zstandard.ZstdCompressor(compression_params=params)
    ratio = len(data) / sum(len(one.compress(c)) for c in chunks)
    key, mac = secrets.token_bytes(32), secrets.token_bytes(32)
    print(f"\n4 MiB records of {len(data) >> 20} MiB of libraries and sources "
          f"(zstd 1 ratio {ratio:.2f}); MB/s of CPU, MB/s of wall:")  # fmt: skip
    rates("zstd level 1, one thread", one.compress, chunks, len(data))
    rates(f"zstd level 1, {threads} worker threads", many.compress, chunks, len(data))
    rates("AES-256-GCM (seal_parts)", lambda c: aead.seal_parts(key, bytes(12), [c], b""),
          chunks, len(data))  # fmt: skip
    rates("keyed BLAKE3", lambda c: blake3(c, key=mac).digest(), chunks, len(data))
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    per_record()
    per_byte()

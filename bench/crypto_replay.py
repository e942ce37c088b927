#!/usr/bin/env python3
"""CPU of a mover's record work alone, per compression setting, in alternating rounds.

One process reads every file of TREE in 4 MiB records and encodes each as a mover of an
encrypted set does (``Codec.encode`` and the keyed checksum), writing the stored bytes
to a file under --out (put it on a tmpfs). No catalog, no dispatcher, no other process:
the CPU figure (best of the rounds, all threads) is far steadier on a shared machine than
a whole backup's. A variant is ``off`` or ``LEVEL:st|mt`` (one thread, or zstd's worker
threads for records of 1 MiB and more); a LEVEL of ``AUTO_LADDER`` (1, -2, -5, -10,
-20, -30) is ``auto`` held at that level, 2-19 a fixed level. The variants follow ``--`` (a
negative level is not an option).

    .venv/bin/python bench/crypto_replay.py TREE --rounds 6 --out /tmp -- off 1:mt 1:st -2:st -5:st
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from parbackup.crypto import compress
from parbackup.crypto.codec import Codec, CodecSpec, Place, RecordMeta

MASTER = b"k" * 32
META = RecordMeta(0o644, 0, 0, 0, b"p" * 40, b"")
PLACE = Place(b"\1" * 16, b"\2" * 16)


def codec_for(variant: str) -> Codec:
    """An encrypted set's codec set to one variant."""
    if variant == "off":
        return Codec(CodecSpec(compress.OFF, MASTER, b"i" * 8))
    text, _, threads = variant.partition(":")
    level = int(text)
    if level in compress.AUTO_LADDER:  # auto, held at that level
        codec = Codec(CodecSpec(compress.AUTO, MASTER, b"i" * 8))
        codec.compressor.level = level
    else:
        codec = Codec(CodecSpec(compress.parse_compression(text), MASTER, b"i" * 8))
    codec.compressor.threaded = threads == "mt"
    return codec


def one_round(files: list[str], codec: Codec, out: int) -> tuple[float, int, int]:
    """(CPU s, source bytes, stored bytes) of encoding every file."""
    buf = memoryview(bytearray(4 << 20))
    started, source, stored = time.process_time(), 0, 0
    for fid, path in enumerate(files):
        fd = os.open(path, os.O_RDONLY)
        try:
            offset = 0
            while (n := os.preadv(fd, [buf], offset)) > 0:
                _flags, body = codec.encode(
                    buf[:n], set_id=b"s" * 16, file_id=fid, offset=offset, file_size=0,
                    kind=0, meta=META, place=PLACE,
                )  # fmt: skip
                codec.digest(buf[:n])
                os.write(out, body)
                source, stored, offset = source + n, stored + len(body), offset + n
        finally:
            os.close(fd)
    os.ftruncate(out, 0)
    os.lseek(out, 0, os.SEEK_SET)
    return time.process_time() - started, source, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree")
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="/tmp", help="where the scratch file goes")
    args = ap.parse_args()
    files = sorted(
        os.path.join(d, f)
        for d, _dirs, names in os.walk(args.tree)
        for f in names
        if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))
    )
    out = os.open(os.path.join(args.out, f"crypto-replay-{os.getpid()}"), os.O_RDWR | os.O_CREAT)
    results: dict[str, list[tuple[float, int, int]]] = {v: [] for v in args.variants}
    try:
        for _ in range(args.rounds):
            for variant in args.variants:  # a fresh codec each round, as each backup has
                results[variant].append(one_round(files, codec_for(variant), out))
    finally:
        os.close(out)
        os.unlink(os.path.join(args.out, f"crypto-replay-{os.getpid()}"))
    for variant, runs in results.items():
        cpus = " ".join(f"{c:.2f}" for c, _, _ in runs)
        _cpu, source, stored = runs[0]
        print(f"{variant:8} CPU best {min(c for c, _, _ in runs):6.2f} s (rounds: {cpus}), "
              f"ratio {source / stored:.3f}, stored {stored / 1e6:.0f} MB")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

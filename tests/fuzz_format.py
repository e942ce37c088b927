"""Fuzz the volume and record header parsers (hypothesis); shared by tests and a CLI.

``python tests/fuzz_format.py [seconds]`` runs a longer campaign and saves every input
that breaks the contract (anything but FormatError, or a hang) into tests/fuzz_corpus/,
where the regular test suite replays it forever after.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from parbackup.errors import FormatError
from parbackup.format import (
    RecordHeader,
    VolumeHeader,
    end_record,
    iter_volume,
    parse_record_header,
    read_volume_header,
)

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


def parse_volume(data: bytes) -> int:
    """Parse a whole volume as a reader does; the number of good records before it stops.

    The contract under test: this returns or raises FormatError, nothing else, for any
    input (no crash, no hang, no allocation sized by a damaged field).
    """
    stream = io.BytesIO(data)
    n = 0
    try:
        head = read_volume_header(stream)
        for _ in iter_volume(stream, head.length):
            n += 1
    except FormatError:
        pass
    with contextlib.suppress(FormatError):
        parse_record_header(data)
    return n


def sample_volume(records: int = 3) -> bytes:
    """A small valid volume with file, dir and symlink records and its end record."""
    from parbackup.format import checksum

    set_id = bytes(range(16))
    out = VolumeHeader(set_id, bytes(16), 1, 1, {"set": set_id.hex(), "sources": ["/s"]})
    data = bytearray(out.encode())
    kinds = ["file", "dir", "symlink"]
    for i in range(records):
        payload = bytes([i]) * (i * 7) if kinds[i % 3] == "file" else b""
        data += RecordHeader(
            kind=kinds[i % 3],
            set_id=set_id,
            file_id=i,
            offset=0,
            size=len(payload),
            file_size=len(payload),
            mode=0o100644,
            uid=0,
            gid=0,
            mtime_ns=0,
            checksum=checksum(payload),
            path=f"/s/f{i}".encode(),
            link=b"target" if kinds[i % 3] == "symlink" else b"",
        ).encode()
        data += payload
    data += end_record(set_id, records).encode()
    return bytes(data)


def corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))]


def campaign(seconds: float) -> int:
    """Mutate corpus inputs at random for ``seconds``; save breaking inputs. Returns count."""
    import hashlib
    import random
    import time

    rng = random.Random()
    seeds = corpus() or [sample_volume()]
    found = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            if op == 0 and data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[rng.randrange(len(data) + 1) :]
            elif op == 2:
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            elif data:
                at = rng.randrange(len(data))
                data[at : at + 8] = rng.choice([b"\xff" * 8, b"\0" * 8, b"\x7f" + b"\xff" * 7])
        try:
            parse_volume(bytes(data))
        except Exception:
            name = hashlib.sha256(data).hexdigest()[:16]
            (CORPUS / f"crash-{name}.bin").write_bytes(data)
            found += 1
    return found


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    print(f"inputs that broke the contract: {campaign(seconds)}")

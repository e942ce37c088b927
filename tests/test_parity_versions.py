"""Parity volume versions (docs/FORMAT.md "Parity volumes"): version 3, written by
default, keeps XXH3-128 unit digests and says so in its header; a version-2 volume
(BLAKE3 digests, tests/fixtures/parity-v2, written by commit 66d17a6) and a version-1
volume (tests/fixtures/parity-v1, written after the data by commit 8d6f529: see make.py
in each) still read, locate a damaged unit and decode around it."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from pathlib import Path

import pytest

from parbackup.devices.memory import MemoryDevice
from parbackup.devices.url import parse_url
from parbackup.errors import FormatError
from parbackup.redundancy.codec import CODEC
from parbackup.redundancy.isal import address
from parbackup.redundancy.layout import Column
from parbackup.redundancy.streamed import StreamedParity
from parbackup.redundancy.stripe import ColumnWriter, ParityReader, open_parity, walk_rows
from parbackup.redundancy.volume import (
    WRITTEN_VERSION,
    ParityHeader,
    read_parity_header,
    read_row,
    row_record_size,
    unit_digest,
)

FIXTURES = Path(__file__).parent / "fixtures"
OLD_VERSIONS = (1, 2)
"""Versions kept as fixtures (``parity-v<version>``): no code writes them any more."""
UNIT = 256
SET = bytes(range(16))


def _device(name: str) -> MemoryDevice:
    dev = MemoryDevice(parse_url(f"memory://{name}-{os.urandom(4).hex()}"))
    dev.open()
    return dev


def _fixture(
    version: int,
) -> tuple[list[tuple[Column, MemoryDevice, bytes]], list[tuple[MemoryDevice, str]]]:
    """The version's fixture: its columns (column, device, stream) and parity volumes
    (device, name), each on a memory device of its own."""
    fixture = FIXTURES / f"parity-v{version}"
    meta = json.loads((fixture / "expected.json").read_text())
    columns = []
    for c in meta["columns"]:
        col = Column.from_json(c)
        dev = _device("d")
        stream = b""
        for name, _size in col.volumes:
            body = (fixture / "objects" / name).read_bytes()
            dev.put(name, body)
            stream += body
        columns.append((col, dev, stream))
    parity = []
    for _label, name in meta["parity"]:
        dev = _device("p")
        dev.put(name, (fixture / "objects" / name).read_bytes())
        parity.append((dev, name))
    return columns, parity


def _walk(columns, parity, lost: set[int]):
    readers = {}
    for i, (dev, name) in enumerate(parity):
        stream, header = open_parity(dev, name)
        readers[i] = ParityReader(stream, header, dev, name)
    stores = {c.label: (None if j in lost else d) for j, (c, d, _s) in enumerate(columns)}
    targets = {columns[j][0].label: ColumnWriter(_device("r"), columns[j][0]) for j in lost}
    outcome = walk_rows(header, stores, readers, targets=targets)
    rebuilt = {}
    for j in lost:
        w = targets[columns[j][0].label]
        w.finish()
        rebuilt[j] = b"".join(w.store.get(name) for name, _s in columns[j][0].volumes)
    return header, outcome, rebuilt


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_an_old_parity_volume_still_reads_and_rebuilds_two_lost_columns(version: int) -> None:
    columns, parity = _fixture(version)
    header, outcome, _ = _walk(columns, parity, set())
    assert header.version == version
    assert (header.k, header.m, header.unit, header.rows) == (3, 2, UNIT, 3)
    assert outcome.lost_units == {} and outcome.unrecoverable == []
    _header, outcome, rebuilt = _walk(columns, parity, {0, 2})
    assert outcome.unrecoverable == []
    assert rebuilt == {0: columns[0][2], 2: columns[2][2]}


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_a_damaged_unit_of_an_old_stripe_is_located_by_its_blake3_digest(version: int) -> None:
    """One byte flipped in column 1's second volume (row 1), column 0 missing: the
    BLAKE3 digest finds the damaged unit and the two parities rebuild column 0."""
    columns, parity = _fixture(version)
    col, dev, _stream = columns[1]
    name, _size = col.volumes[1]
    body = bytearray(dev.get(name))
    body[UNIT - col.volumes[0][1] + 5] ^= 0x01  # stream offset UNIT + 5: row 1
    dev.put(name, bytes(body))
    _header, outcome, rebuilt = _walk(columns, parity, {0})
    assert outcome.lost_units == {columns[0][0].label: 3, col.label: 1}
    assert outcome.unrecoverable == []
    assert rebuilt == {0: columns[0][2]}


def _stream_v3(sizes: list[int], m: int, seed: int):
    rnd = random.Random(seed)
    columns = []
    for j, size in enumerate(sizes):
        stream = rnd.randbytes(size)
        name = f"sets/{SET.hex()}/{j:02x}-0000.pbv"
        dev = _device("d")
        dev.put(name, stream)
        columns.append((Column(f"{j:02x}" * 16, ((name, size),)), dev, stream))
    targets = [(f"{0xA0 + i:02x}" * 16, _device("p")) for i in range(m)]
    sp = StreamedParity(SET, [c.label for c, _d, _s in columns], targets, UNIT)
    for j, (col, _dev, stream) in enumerate(columns):
        for row in range(-(-len(stream) // UNIT)):
            unit = bytearray(stream[row * UNIT : (row + 1) * UNIT].ljust(UNIT, b"\0"))
            sp.add(j, row, address(unit), unit_digest(unit, WRITTEN_VERSION))
        sp.end(j, col.volumes)
    written, _cols, _rows = sp.finish()
    return columns, [
        (dev, name) for (_l, dev), (_l2, name, _s) in zip(targets, written, strict=True)
    ]


def test_version_3_is_written_with_xxh3_digests_and_says_so() -> None:
    columns, parity = _stream_v3([3 * UNIT, 2 * UNIT + 9], 1, 3)
    dev, name = parity[0]
    body = dev.get(name)
    header = read_parity_header(io.BytesIO(body))
    assert WRITTEN_VERSION == header.version == 3
    meta = json.loads(body[struct.calcsize("<4sHHI16s16sHq") : header.length - 4])
    assert meta["checksum"] == "xxh3-128"
    assert row_record_size(2, 1, 3) == row_record_size(2, 1, 2) - 3 * 16
    stream, header = open_parity(dev, name)
    rec, payload = read_row(stream, header)  # type: ignore[misc]
    assert [len(d) for d in rec.digests] == [16, 16, 16]
    unit0 = columns[0][2][:UNIT]
    assert rec.digests[0] == unit_digest(unit0, 3) != unit_digest(unit0, 2)[:16]
    assert rec.digests[2] == unit_digest(payload, 3)


def test_a_damaged_unit_of_a_version_3_stripe_is_located_and_decoded_around() -> None:
    columns, parity = _stream_v3([4 * UNIT, 4 * UNIT, 3 * UNIT + 1], 2, 4)
    col, dev, stream = columns[2]
    name, _size = col.volumes[0]
    dev.put(
        name, stream[: 2 * UNIT + 3] + bytes([stream[2 * UNIT + 3] ^ 0x80]) + stream[2 * UNIT + 4 :]
    )
    _header, outcome, rebuilt = _walk(columns, parity, {0})
    assert outcome.lost_units == {columns[0][0].label: 4, col.label: 1}
    assert outcome.unrecoverable == []
    assert rebuilt == {0: columns[0][2]}


def test_a_version_3_header_naming_another_unit_check_is_refused() -> None:
    cols = (Column("00" * 16, ()), Column("01" * 16, ()))
    head = ParityHeader(SET, "a0" * 16, 0, CODEC, 2, 1, UNIT, 0, cols, ("a0" * 16,), version=3)
    blob = head.encode()
    assert read_parity_header(io.BytesIO(blob)).version == 3
    forged = blob[:-4].replace(b'"xxh3-128"', b'"blake3"  ')  # same length
    forged += zlib.crc32(forged).to_bytes(4, "little")
    with pytest.raises(FormatError, match="unit check"):
        read_parity_header(io.BytesIO(forged))

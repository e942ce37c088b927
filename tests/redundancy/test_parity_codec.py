"""The Reed–Solomon row coder and the row layout (redundancy/codec.py, layout.py,
volume.py, stripe.py): k-of-n for every allowed (k, m), and stripes over in-memory
devices that lose devices and bytes."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parbackup.devices.base import Device
from parbackup.devices.memory import MemoryDevice
from parbackup.devices.registry import open_device
from parbackup.devices.url import parse_url
from parbackup.errors import DeviceError, DeviceMissingError, FormatError, UsageError
from parbackup.redundancy.codec import MAX_DATA, MAX_PARITY, RowCodec, check_params
from parbackup.redundancy.layout import Column, row_count, rows_of
from parbackup.redundancy.stripe import (
    ColumnWriter,
    ParityReader,
    open_parity,
    walk_rows,
    write_parity,
)
from parbackup.redundancy.volume import WRITTEN_VERSION, read_parity_header, row_record_size

UNIT = 256


def _rows(k: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(UNIT) for _ in range(k)]


@pytest.mark.slow
@pytest.mark.parametrize("m", range(1, MAX_PARITY + 1))
def test_every_loss_of_m_units_decodes_for_every_allowed_k(m: int) -> None:
    """MDS: for every allowed k, every choice of k surviving units out of k+m gives the
    row back (Cauchy; ISA-L's Vandermonde matrix fails this for some parameters)."""
    for k in range(1, MAX_DATA + 1):
        codec = RowCodec(k, m, UNIT)
        data = _rows(k, k * 10 + m)
        parity, headers = codec.encode(data)
        whole = data + parity
        for kept in itertools.combinations(range(k + m), k):
            got = codec.decode({i: whole[i] for i in kept}, headers)
            assert got == whole, (k, m, kept)


def test_fewer_than_k_units_is_a_format_error() -> None:
    codec = RowCodec(3, 2, UNIT)
    data = _rows(3, 1)
    parity, headers = codec.encode(data)
    with pytest.raises(FormatError, match="needs 3"):
        codec.decode({0: data[0], 3: parity[0]}, headers)


@pytest.mark.parametrize(("k", "m"), [(0, 1), (3, 0), (MAX_DATA + 1, 1), (3, MAX_PARITY + 1)])
def test_parameters_out_of_range_are_refused(k: int, m: int) -> None:
    with pytest.raises(UsageError):
        check_params(k, m)


def test_column_spans_map_stream_offsets_to_volumes() -> None:
    col = Column("a", (("v1", 10), ("v2", 5), ("v3", 20)))
    assert col.length == 35
    assert col.spans(8, 10) == [("v1", 8, 2), ("v2", 0, 5), ("v3", 0, 3)]
    assert col.spans(30, 100) == [("v3", 15, 5)]
    assert col.spans(40, 10) == []
    assert col.start_of("v3") == 15
    assert row_count([col, Column("b", (("w", 70),))], 32) == 3
    assert list(rows_of(31, 2, 32)) == [0, 1]


def _device(name: str, root: Path | None = None) -> Device:
    """A memory device, or with ``root`` a local directory under it (read straight into
    the reader's buffers)."""
    if root is not None:
        (root / name).mkdir()
        dev = open_device(str(root / name))
    else:
        dev = MemoryDevice(parse_url(f"memory://{name}-{os.urandom(4).hex()}"))
    dev.open()
    return dev


def _stripe(sizes: list[int], m: int, seed: int, root: Path | None = None):
    """Data columns of ``sizes`` bytes (each split in up to three volumes) on memory
    devices (local directories under ``root``), and parity written on m more."""
    rnd = random.Random(seed)
    set_id = bytes(16)
    columns, streams = [], []
    for j, size in enumerate(sizes):
        dev = _device(f"d{j}", root)
        stream = rnd.randbytes(size)
        cuts = sorted(rnd.sample(range(size + 1), min(2, size + 1)))
        bounds = [0, *cuts, size]
        vols = []
        for v, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            name = f"sets/x/d{j}-{v:04d}.pbv"
            dev.put(name, stream[lo:hi])
            vols.append((name, hi - lo))
        columns.append((Column(f"{j:02x}" * 16, tuple(vols)), dev))
        streams.append(stream)
    parity = [(f"{0xA0 + i:02x}" * 16, _device(f"p{i}", root)) for i in range(m)]
    written = write_parity(set_id, columns, parity, unit=UNIT)
    return columns, parity, written, streams


def _readers(parity, written, lost: set[int]):
    out, header = {}, None
    for i, ((_label, dev), (_l, name, _size)) in enumerate(zip(parity, written, strict=True)):
        if i in lost:
            continue
        stream, header = open_parity(dev, name)
        out[i] = ParityReader(stream, header, dev, name)
    return out, header


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 5 * UNIT), min_size=1, max_size=5),
    m=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_lost_and_damaged_columns_are_rebuilt_byte_for_byte(sizes, m, seed, data) -> None:
    """Any m of the k+m devices lost or with damaged bytes: every lost column comes back
    whole, and the outcome names the columns that lost units."""
    columns, parity, written, streams = _stripe(sizes, m, seed)
    k = len(columns)
    hit = data.draw(st.sets(st.integers(0, k + m - 1), max_size=m))
    damaged = data.draw(st.sets(st.sampled_from(sorted(hit)), max_size=len(hit))) if hit else set()
    stores = {}
    for j, (col, dev) in enumerate(columns):
        if j not in hit:
            stores[col.label] = dev
        elif j in damaged and col.length:
            name, _size = col.volumes[-1] if col.volumes[-1][1] else col.volumes[0]
            body = bytearray(dev.get(name))
            if body:
                body[data.draw(st.integers(0, len(body) - 1))] ^= 0x5A
                dev.put(name, bytes(body))
            stores[col.label] = dev
        # else: the device is missing (None)
    lost_parity = {i - k for i in hit if i >= k}
    readers, _ = _readers(parity, written, lost_parity)
    _stream, header = open_parity(parity[0][1], written[0][1])  # rows and volumes filled in
    targets = {}
    rebuilt = {}
    for j, (col, _dev) in enumerate(columns):
        if j in hit:
            rebuilt[j] = _device(f"r{j}")
            targets[col.label] = ColumnWriter(rebuilt[j], col)
    outcome = walk_rows(header, stores, readers, targets=targets)
    assert outcome.unrecoverable == []
    for w in targets.values():
        w.finish()
    for j, dev in rebuilt.items():
        col = columns[j][0]
        got = b"".join(dev.get(name) for name, _ in col.volumes)
        assert got == streams[j]
    for j, (col, _dev) in enumerate(columns):
        if j not in hit:
            assert col.label not in outcome.lost_units


def test_more_losses_than_parities_are_unrecoverable_rows() -> None:
    columns, parity, written, _ = _stripe([3 * UNIT, 2 * UNIT, UNIT], 1, 7)
    readers, header = _readers(parity, written, set())
    stores = {
        columns[0][0].label: None,
        columns[1][0].label: None,
        columns[2][0].label: columns[2][1],
    }
    outcome = walk_rows(header, stores, readers)
    assert outcome.unrecoverable == [0, 1]  # row 2 holds only column 0: one unit lost
    assert outcome.lost_units[columns[0][0].label] == 3


def _spec(where: Path, columns, parity, written, lost: int, others=frozenset()) -> Path:
    """A decoded stand-in's spec for column ``lost`` (as readback/recover.py writes
    it), the units of ``others`` (data j, parity k + i) missing too."""
    k, m = len(columns), len(parity)
    info = {
        "codec": "isa_l_rs_cauchy",
        "k": k,
        "m": m,
        "unit": UNIT,
        "version": WRITTEN_VERSION,
        "columns": [c.label for c, _d in columns],
        "volumes": [c.to_json() for c, _d in columns],
        "rows": row_count([c for c, _d in columns], UNIT),
        "created_ns": 0,
        "parity": [
            {"label": label, "name": name, "size": size}
            for (label, _d), (_l, name, size) in zip(parity, written, strict=True)
        ],
    }
    spec = {
        "label": columns[lost][0].label,
        "stripes": [
            {
                "set": bytes(16).hex(),
                "info": info,
                "data": {
                    c.label: d.url.raw
                    for j, (c, d) in enumerate(columns)
                    if j != lost and j not in others
                },
                "parity": {
                    str(i): d.url.raw for i, (_l, d) in enumerate(parity) if k + i not in others
                },
                "lost": [columns[lost][0].label],
            }
        ],
    }
    path = where / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 4 * UNIT), min_size=2, max_size=4),
    m=st.integers(1, 2),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_decoded_device_reads_a_lost_column_row_by_row(tmp_path_factory, sizes, m, seed, data):
    """devices/decoded.py: any byte range of a lost column's volumes, decoded on demand
    from the other columns and the parity (m-1 more devices lost too)."""
    columns, parity, written, streams = _stripe(sizes, m, seed)
    k = len(columns)
    lost = data.draw(st.integers(0, k - 1))
    others = data.draw(
        st.sets(st.integers(0, k + m - 1).filter(lambda i: i != lost), max_size=m - 1)
    )
    path = _spec(tmp_path_factory.mktemp("spec"), columns, parity, written, lost, others)
    dev = open_device(f"decoded://{path}")
    dev.open(write=False)
    try:
        col = columns[lost][0]
        assert dev.read_label().label == col.label
        assert [(o.name, o.size) for o in dev.list("sets/")] == sorted(col.volumes)
        for name, size in col.volumes:
            if not size:
                continue
            off = data.draw(st.integers(0, size - 1))
            n = data.draw(st.integers(1, size - off))
            start = col.start_of(name) + off
            assert dev.read(name, off, n) == streams[lost][start : start + n]
            # straight into a reader's span buffer, or read when the buffer is too small
            buf = bytearray(data.draw(st.sampled_from([n, n + 7, max(0, n - 1)])))
            view = dev.read_view(name, off, n, buf)
            assert bytes(view) == streams[lost][start : start + n]
            assert (view.obj is buf) == (len(buf) >= n)
    finally:
        dev.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 12 * UNIT), min_size=2, max_size=4),
    m=st.integers(1, 2),
    seed=st.integers(0, 2**32),
    span=st.integers(1, 5 * UNIT),
    data=st.data(),
)
def test_decoded_device_read_span_after_span(tmp_path_factory, sizes, m, seed, span, data):
    """A stand-in read as a reader reads it, span after span into one reused buffer,
    from local directories (units read straight into the stand-in's buffers, whole
    units decoded straight into the reader's, the rows a span covers in part kept for
    the next), then once more from the start."""
    root = tmp_path_factory.mktemp("devices")
    columns, parity, written, streams = _stripe(sizes, m, seed, root)
    lost = data.draw(st.integers(0, len(columns) - 1))
    path = _spec(tmp_path_factory.mktemp("spec"), columns, parity, written, lost)
    dev = open_device(f"decoded://{path}")
    dev.open(write=False)
    col, buf = columns[lost][0], bytearray(span)
    try:
        for _again in range(2):
            for name, size in col.volumes:
                for off in range(0, size, span):
                    n = min(span, size - off)
                    view = dev.read_view(name, off, n, buf)
                    start = col.start_of(name) + off
                    assert bytes(view) == streams[lost][start : start + n]
                    assert view.obj is buf
    finally:
        dev.close()


def _flip(dev: Device, name: str, at: int) -> None:
    body = bytearray(dev.get(name))
    body[at] ^= 0x5A
    dev.put(name, bytes(body))


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("where", ["data", "parity"])
def test_a_damaged_surviving_unit_is_decoded_around_or_its_row_is_refused(
    tmp_path, m: int, where: str
) -> None:
    """Column 0 lost, one byte of row 2 damaged in a surviving data column or in
    parity volume 0's unit: the decoded unit's digest differs, the units are checked,
    and with a second parity the row is decoded from the good ones; with one, row 2 is
    refused (DeviceError) and every other row still reads right."""
    columns, parity, written, streams = _stripe([6 * UNIT] * 3, m, 5, tmp_path)
    if where == "data":
        [(name, at, _n)] = columns[1][0].spans(2 * UNIT + 17, 1)
        _flip(columns[1][1], name, at)
    else:
        (_label, pdev), (_l, name, _size) = parity[0], written[0]
        header = read_parity_header(io.BytesIO(pdev.get(name)))
        size = row_record_size(3, m, header.version)
        _flip(pdev, name, header.length + 2 * (size + UNIT) + size + 17)
    path = _spec(tmp_path, columns, parity, written, 0)
    dev = open_device(f"decoded://{path}")
    dev.open(write=False)
    col, want = columns[0][0], streams[0]
    try:
        for row in range(6):
            pieces = col.spans(row * UNIT, UNIT)
            if m == 1 and row == 2:
                with pytest.raises(DeviceError, match="row 2"):
                    b"".join(dev.read(n, off, length) for n, off, length in pieces)
                continue
            got = b"".join(dev.read(n, off, length) for n, off, length in pieces)
            assert got == want[row * UNIT : (row + 1) * UNIT]
    finally:
        dev.close()


def test_a_second_parity_is_read_only_for_a_row_that_decodes_wrong(tmp_path) -> None:
    """m=2, one column lost: k units decode a row, so the second parity volume is not
    read but for its header (the test-only ``count=`` wrapper counts the bytes each
    gives), until a row decodes wrong (a damaged surviving unit): then every unit of
    that row is read, and the row comes back from the good ones."""
    rows = 400  # parity volumes larger than the header's read
    columns, parity, written, streams = _stripe([rows * UNIT] * 3, 2, 9, tmp_path)
    path = _spec(tmp_path, columns, parity, written, 0)
    counts = [tmp_path / "count0", tmp_path / "count1"]
    spec = json.loads(path.read_text())
    for i, count in enumerate(counts):
        url = f"faulty+file://{parity[i][1].url.path}?count={count}"
        spec["stripes"][0]["parity"][str(i)] = url
    path.write_text(json.dumps(spec))
    col, want = columns[0][0], streams[0]

    def read_all() -> list[int]:
        """The stand-in read whole; the bytes each parity volume gave so far."""
        dev = open_device(f"decoded://{path}")
        dev.open(write=False)
        try:
            got = b"".join(dev.read(n, off, size) for n, off, size in col.spans(0, col.length))
        finally:
            dev.close()
        assert got == want
        return [sum(int(n) for n in c.read_text().split()) for c in counts]

    first = read_all()
    assert first[0] >= rows * UNIT
    assert first[1] < rows * UNIT // 4
    [(name, at, _n)] = columns[1][0].spans(300 * UNIT + 5, 1)
    _flip(columns[1][1], name, at)
    second = read_all()
    # row 300's record and parity unit, once: the header as the first time
    assert second[1] - 2 * first[1] == row_record_size(3, 2, WRITTEN_VERSION) + UNIT


def test_a_damaged_parity_row_costs_that_row_only() -> None:
    """One byte flipped in row 1's parity record: with a data column missing, rows 0, 2
    and 3 still decode (the reader finds row 2 at its own offset); row 1 is lost.
    (Before, the rest of the parity volume was given up: rows 1-3 were lost.)"""
    columns, parity, written, _streams = _stripe([4 * UNIT, 4 * UNIT, 4 * UNIT], 1, 3)
    (_label, pdev), (_l, name, _size) = parity[0], written[0]
    header = read_parity_header(io.BytesIO(pdev.get(name)))
    step = row_record_size(3, 1, header.version) + UNIT
    body = bytearray(pdev.get(name))
    body[header.length + step + 40] ^= 0xFF
    pdev.put(name, bytes(body))
    readers, header = _readers(parity, written, set())
    stores = {c.label: d for c, d in columns}
    stores[columns[0][0].label] = None
    outcome = walk_rows(header, stores, readers)
    assert outcome.unrecoverable == [1]
    assert outcome.lost_units == {columns[0][0].label: 4, parity[0][0]: 1}


def test_a_decoded_stand_in_opened_on_another_host_says_where_it_is_read(tmp_path) -> None:
    """With ``restore --cluster`` a reader placed on another host does not find the
    stand-in's spec (it lies on the restoring host): one clear line, not a traceback
    or 'unusable spec'."""
    dev = open_device(f"decoded://{tmp_path / 'elsewhere' / 'label.json'}")
    with pytest.raises(DeviceMissingError, match="on the host that runs the restore only"):
        dev.open(write=False)

"""Parity written while the data is (redundancy/accumulate.py, streamed.py, volume.py
version 3): whatever order the columns' units arrive in, with rows spilled past the
window, the volumes hold the rows the after-the-data writer makes, and read back
(open_parity, walk_rows) to rebuild lost columns."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsfixtures import fill_up, tmpfs_fixture  # noqa: F401 (fixture)
from parbackup.devices.memory import MemoryDevice
from parbackup.devices.url import parse_url
from parbackup.errors import FormatError
from parbackup.redundancy.accumulate import RowAccumulator
from parbackup.redundancy.isal import Updater, address
from parbackup.redundancy.layout import Column
from parbackup.redundancy.streamed import StreamedParity
from parbackup.redundancy.stripe import (
    ColumnWriter,
    ParityReader,
    open_parity,
    walk_rows,
    write_parity,
)
from parbackup.redundancy.volume import WRITTEN_VERSION, read_row, unit_digest

UNIT = 256
SET = bytes(range(16))


def _device(name: str) -> MemoryDevice:
    dev = MemoryDevice(parse_url(f"memory://{name}-{os.urandom(4).hex()}"))
    dev.open()
    return dev


def _columns(sizes: list[int], rnd: random.Random):
    """Column streams of ``sizes`` bytes, each cut into up to three volumes."""
    out = []
    for j, size in enumerate(sizes):
        stream = rnd.randbytes(size)
        cuts = sorted(rnd.sample(range(size + 1), min(2, size + 1)))
        bounds = [0, *cuts, size]
        vols = tuple(
            (f"sets/x/{j:02x}-{v:04d}.pbv", hi - lo)
            for v, (lo, hi) in enumerate(itertools.pairwise(bounds))
        )
        out.append((Column(f"{j:02x}" * 16, vols), stream))
    return out


def _stream_parity(columns, m: int, order: list[int], window: int, settles=None):
    """Feed the columns' units in ``order`` (a column index per step: its next unit,
    or its end once it has none left) into a StreamedParity on m memory devices. With
    ``settles`` (a flag per step), every unit is offered instead of added, and a step
    whose flag is set first settles the column's oldest offered unit; a unit released
    is overwritten at once (its slot reused), so a read after its release shows."""
    parity = [(f"{0xA0 + i:02x}" * 16, _device(f"p{i}")) for i in range(m)]
    sp = StreamedParity(SET, [c.label for c, _s in columns], parity, UNIT, window=window)
    sent = [0] * len(columns)
    ended = [False] * len(columns)
    held: dict[tuple[int, int], bytearray] = {}
    rest = [j for j, (_c, s) in enumerate(columns) for _ in range(-(-len(s) // UNIT) + 1)]
    for step, j in enumerate([*order, *rest]):
        col, stream = columns[j]
        if settles is not None and settles[step % len(settles)] and sp.offered(j):
            sp.settle(j)
        if ended[j]:
            continue
        at = sent[j] * UNIT
        if at >= len(stream):
            sp.end(j, col.volumes)
            ended[j] = True
        else:
            unit = bytearray(stream[at : at + UNIT].ljust(UNIT, b"\0"))
            digest = unit_digest(unit, WRITTEN_VERSION)
            if settles is None:
                sp.add(j, sent[j], address(unit), digest)
            else:
                held[(j, sent[j])] = unit
                sp.offer(j, sent[j], address(unit), digest, (j, sent[j]))
            sent[j] += 1
        if settles is not None:
            for token in sp.released():
                held.pop(token)[:] = b"\xff" * UNIT
    assert all(ended)
    assert sp.finished
    assert not held, "every offered unit is released once its row is written"
    written, cols, rows = sp.finish()
    return parity, written, cols, rows, sp


def _rows(dev, name):
    stream, header = open_parity(dev, name)
    rows = []
    while (got := read_row(stream, header)) is not None:
        rows.append(got)
    return header, rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 6 * UNIT), min_size=1, max_size=5),
    m=st.integers(1, 3),
    window=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    settles=st.none() | st.lists(st.booleans(), min_size=1, max_size=8),
    data=st.data(),
)
def test_streamed_rows_are_the_after_the_data_rows_in_any_arrival_order(
    sizes, m, window, seed, settles, data
) -> None:
    """Units added one by one, or offered (rows encoded whole, some units settled
    early, in memory or spilled): the same volumes as the after-the-data writer."""
    rnd = random.Random(seed)
    columns = _columns(sizes, rnd)
    k = len(columns)
    steps = sum(-(-len(s) // UNIT) + 1 for _c, s in columns)
    order = data.draw(st.lists(st.integers(0, k - 1), min_size=steps, max_size=3 * steps))
    parity, written, cols, rows, _sp = _stream_parity(columns, m, order, window, settles)
    assert cols == tuple(c for c, _s in columns)
    # the same columns on devices, their parity written after the data (the same version)
    stores = []
    for col, stream in columns:
        dev = _device("d")
        at = 0
        for name, size in col.volumes:
            dev.put(name, stream[at : at + size])
            at += size
        stores.append((col, dev))
    old_parity = [(label, _device("q")) for label, _d in parity]
    old = write_parity(SET, stores, old_parity, unit=UNIT)
    got_rows, want_rows = [], []
    for i in range(m):
        head, got = _rows(parity[i][1], written[i][1])
        old_head, want = _rows(old_parity[i][1], old[i][1])
        assert head.version == old_head.version == 3
        assert head.rows == old_head.rows == rows and head.columns == old_head.columns
        assert [(r.row, r.fragments, u) for r, u in got] == [
            (r.row, r.fragments, u) for r, u in want
        ]
        got_rows.append(got)
        want_rows.append(want)
    # the same units, digested with XXH3-128 (version 3) both ways
    for row in range(rows):
        units = [s[row * UNIT : (row + 1) * UNIT].ljust(UNIT, b"\0") for _c, s in columns]
        units += [got_rows[i][row][1] for i in range(m)]
        for i in range(m):
            assert got_rows[i][row][0].digests == tuple(unit_digest(u, 3) for u in units)
            assert want_rows[i][row][0].digests == got_rows[i][row][0].digests
    # lose any m columns: the version-3 volumes give them back
    lost = set(rnd.sample(range(k), min(m, k)))
    readers = {}
    header = None
    for i, (_label, dev) in enumerate(parity):
        stream, header = open_parity(dev, written[i][1])
        readers[i] = ParityReader(stream, header, dev, written[i][1])
    assert header is not None
    data_stores = {c.label: (None if j in lost else d) for j, (c, d) in enumerate(stores)}
    targets = {stores[j][0].label: ColumnWriter(_device("r"), stores[j][0]) for j in lost}
    outcome = walk_rows(header, data_stores, readers, targets=targets)
    assert outcome.unrecoverable == []
    for j in lost:
        w = targets[stores[j][0].label]
        w.finish()
        got = b"".join(w.store.get(name) for name, _s in stores[j][0].volumes)
        assert got == columns[j][1]


def test_far_ahead_rows_spill_and_a_cut_or_damaged_end_is_a_format_error() -> None:
    """A column 10 rows ahead of the other spills rows past a window of 2; the volume
    is still right. Cut short, or with its end record damaged, it does not open."""
    rnd = random.Random(5)
    columns = _columns([10 * UNIT, 3 * UNIT + 7], rnd)
    order = [0] * 11 + [1] * 5
    parity, written, _cols, rows, sp = _stream_parity(columns, 1, order, window=2)
    assert sp.acc.spilled_rows >= 7 and rows == 10
    dev, name = parity[0][1], written[0][1]
    body = dev.get(name)
    _head, got = _rows(dev, name)
    assert len(got) == 10
    dev.put(name, body[:-100])  # cut short: no end record where the footer says
    with pytest.raises(FormatError):
        open_parity(dev, name)
    damaged = bytearray(body)
    damaged[-20] ^= 0x40  # inside the end record's JSON: its CRC fails
    dev.put(name, bytes(damaged))
    with pytest.raises(FormatError):
        open_parity(dev, name)
    dev.put(name, body)
    _stream, header = open_parity(dev, name)
    assert header.rows == 10


def test_units_out_of_order_or_volumes_that_disagree_are_refused() -> None:
    rnd = random.Random(1)
    columns = _columns([2 * UNIT], rnd)
    sp = StreamedParity(SET, [columns[0][0].label], [("a0" * 16, _device("p"))], UNIT)
    unit = bytearray(UNIT)
    with pytest.raises(ValueError):
        sp.add(0, 1, address(unit), unit_digest(unit, WRITTEN_VERSION))  # row 1 before row 0
    sp.add(0, 0, address(unit), unit_digest(unit, WRITTEN_VERSION))
    sp.end(0, [("v", 5 * UNIT)])  # says 5 units, gave 1
    with pytest.raises(FormatError, match="do not match"):
        sp.finish()
    sp.abort()


def test_a_row_spilled_onto_a_full_disk_is_an_error_not_a_cut_sum(tmpfs) -> None:
    """The spill file's file system has one page left: a row's sum (16 pages) written
    there short raises ENOSPC. It used to be taken as written, and the row read back
    later with zeros for its missing pages: parity silently wrong."""
    unit = 16 * 4096
    updater = Updater.load(2, 1, unit)
    if updater is None:
        pytest.skip("ISA-L is not available")
    disk = tmpfs("spill", "1m")
    fill_up(disk)
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size // 4096 * 4096 - 4096)  # one page left
    acc = RowAccumulator(updater, window=1, spill_dir=str(disk))
    data = bytearray(os.urandom(unit))
    digest = unit_digest(data, WRITTEN_VERSION)
    try:
        acc.add(0, 0, address(data), digest)  # in memory
        with pytest.raises(OSError, match="No space left"):
            acc.add(0, 1, address(data), digest)  # past the window: spilled
    finally:
        acc.close()

"""devices/rowsahead.py: rows decoded on a thread of their own, given back in order to
any sequence of reads (whole rows, rows in part, rows decoded ahead or never wanted),
with each row's error reaching the read that wants that row, and the thread gone at
``close``."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.devices.rowsahead import MAX_AHEAD, RowsAhead
from parbackup.errors import DeviceError

UNIT = 64


def _row_bytes(row: int) -> bytes:
    return bytes((row * 7 + i) % 251 for i in range(UNIT))


class _Decoder:
    """Writes each row's known bytes; fails the rows in ``bad``; counts every call."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.bad, self.calls, self.threads = bad, [], set()

    def __call__(self, row: int, target: memoryview) -> None:
        self.calls.append(row)
        self.threads.add(threading.current_thread().name)
        if row in self.bad:
            raise DeviceError(f"row {row} cannot be read")
        assert len(target) == UNIT
        target[:] = _row_bytes(row)


def _read(ahead: RowsAhead, start: int, length: int, next_rows: int) -> bytes:
    """Stream bytes [start, start+length) as the stand-in asks for them, with
    ``next_rows`` rows past the end decoded ahead."""
    rows = range(start // UNIT, (start + length - 1) // UNIT + 1)
    pieces = [
        (r, max(start, r * UNIT) - r * UNIT, min(start + length, (r + 1) * UNIT) - r * UNIT)
        for r in rows
    ]
    out = bytearray(length)
    ahead.read(pieces, memoryview(out), range(rows.stop, rows.stop + next_rows))
    return bytes(out)


def _stream(start: int, length: int) -> bytes:
    rows = range(start // UNIT, (start + length - 1) // UNIT + 1)
    whole = b"".join(_row_bytes(r) for r in rows)
    at = start - rows.start * UNIT
    return whole[at : at + length]


@settings(max_examples=60)
@given(
    reads=st.lists(
        st.tuples(st.integers(0, 40 * UNIT), st.integers(1, 6 * UNIT), st.integers(0, 8)),
        min_size=1,
        max_size=12,
    ),
    bad=st.frozensets(st.integers(0, 50), max_size=3),
)
def test_any_reads_give_the_rows_bytes_or_the_error_of_a_row_they_cover(reads, bad) -> None:
    """Reads anywhere, in any order, with read-ahead or none: each gives exactly the
    stream's bytes, or fails with the error of a failing row it covers (never one of a
    row decoded ahead only); the buffers held stay bounded; rows are decoded on the
    thread only."""
    decode = _Decoder(bad)
    ahead = RowsAhead(decode, UNIT, keep=2)
    most = max(n for _s, _l, n in reads)
    try:
        for start, length, next_rows in reads:
            covered = set(range(start // UNIT, (start + length - 1) // UNIT + 1))
            if covered & bad:
                with pytest.raises(DeviceError, match="cannot be read") as err:
                    _read(ahead, start, length, next_rows)
                assert int(str(err.value).split()[1]) in covered & bad
            else:
                assert _read(ahead, start, length, next_rows) == _stream(start, length)
            held = len(ahead.spare) + len(ahead.kept) + len(ahead.done)
            # rows ahead; kept and taken from kept (2 + 2); the rows a read covers in
            # part (2); one decoded late, one being decoded, one being copied
            assert held <= most + 9
            assert ahead.busy is None or not ahead.busy[1]  # nothing writes into ``out``
        assert decode.threads <= {"rows-ahead"}
    finally:
        ahead.close()
    assert ahead.thread is None or not ahead.thread.is_alive()


def test_a_sequential_reader_gets_every_row_decoded_once() -> None:
    """Spans that follow on from each other, not on row bounds (a reader's 16 MiB
    spans): each row is decoded once, the rows a span covers in part kept for the next,
    the next span's rows decoded ahead."""
    decode = _Decoder()
    ahead = RowsAhead(decode, UNIT, keep=2)
    span, total, at = 5 * UNIT + 13, 40 * UNIT, 0
    try:
        while at < total:
            n = min(span, total - at)
            assert _read(ahead, at, n, 6) == _stream(at, n)
            at += n
    finally:
        ahead.close()
    assert set(range(40)) <= set(decode.calls)
    assert len(decode.calls) == len(set(decode.calls))


def test_read_ahead_stops_at_its_bound() -> None:
    """However many rows a read asks ahead for, no more than ``MAX_AHEAD`` bytes are
    decoded past it."""
    unit = MAX_AHEAD // 4
    calls: list[int] = []

    def decode(row: int, target: memoryview) -> None:
        calls.append(row)

    ahead = RowsAhead(decode, unit)
    try:
        ahead.read([(0, 0, 1)], memoryview(bytearray(1)), range(1, 100))
    finally:
        ahead.close()  # the queue is dropped: only rows already taken were decoded
    assert max(calls) <= 4


def test_close_ends_the_thread_and_a_read_after_says_so() -> None:
    ahead = RowsAhead(_Decoder(), UNIT)
    assert _read(ahead, 0, 3 * UNIT, 2) == _stream(0, 3 * UNIT)
    thread = ahead.thread
    ahead.close()
    assert thread is not None and not thread.is_alive()
    with pytest.raises(DeviceError, match="ended"):
        _read(ahead, 10 * UNIT, UNIT, 0)

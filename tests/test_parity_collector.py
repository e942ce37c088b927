"""The parity collector with real tees in this process (engine/paritystream.py,
paritytee.py): a real collector thread, real memfd slots and Unix sockets, a directory
as the parity device. A column running ahead of the others is held (its tee waits for
a slot) instead of spilled; held past ``hold`` seconds it spills. Either way the
parity volume holds exactly the rows the after-the-data writer makes."""

from __future__ import annotations

import os
import random
import threading

from parbackup.devices.memory import MemoryDevice
from parbackup.devices.registry import open_device
from parbackup.devices.url import parse_url
from parbackup.engine.paritystream import (
    Abandon,
    Begin,
    Close,
    Collector,
    Failed,
    Listening,
    Opened,
    ParitySpec,
    Written,
    _Collector,
)
from parbackup.engine.paritytee import ParityLink, ParityTee
from parbackup.redundancy.layout import Column
from parbackup.redundancy.stripe import open_parity, write_parity
from parbackup.redundancy.volume import WRITTEN_VERSION, read_row, unit_digest

UNIT = 4096
SET = bytes(range(16))
LABELS = ("0a" * 16, "0b" * 16)
TIMEOUT = 60.0


def _memory(name: str) -> MemoryDevice:
    dev = MemoryDevice(parse_url(f"memory://{name}-{os.urandom(4).hex()}"))
    dev.open()
    return dev


def _answer(collector: Collector, want: type):
    assert collector.channel.poll(TIMEOUT), f"no {want.__name__} from the collector"
    msg = collector.channel.recv()
    assert isinstance(msg, want), msg
    return msg


def _feed(tee: ParityTee, name: str, stream: bytes) -> None:
    """A mover's writes: the stream in pieces that cross unit borders, then its end."""
    at = 0
    while at < len(stream):
        step = min(UNIT + 1000, len(stream) - at)
        tee.feed(stream[at : at + step])
        at += step
    tee.volume_done(name, len(stream))
    tee.end()


def _rows(store, name: str) -> tuple[list, list, int]:
    """(row, parity unit) of every row, every row's unit digests, the volume version."""
    stream, header = open_parity(store, name)
    rows, digests = [], []
    while (got := read_row(stream, header)) is not None:
        rows.append((got[0].row, got[1]))
        digests.append(got[0].digests)
    return rows, digests, header.version


def _run(tmp_path, hold: float, lead_waits: bool) -> tuple[list, dict, list]:
    """Column 0 (20 units) is fed first, alone, by its own thread; column 1 (6 units)
    follows once column 0 waits for a slot (``lead_waits``) or has ended. Returns the
    parity rows written, the tee's state and what the after-the-data writer makes."""
    rnd = random.Random(7)
    streams = [rnd.randbytes(20 * UNIT - 100), rnd.randbytes(6 * UNIT + 5)]
    parity_dir = tmp_path / "parity"
    parity_dir.mkdir()
    spec = ParitySpec((str(parity_dir),), UNIT, window=2, timeout=TIMEOUT, hold=hold)
    collector = Collector(spec)
    try:
        (label,) = _answer(collector, Opened).labels
        collector.send(Begin(SET, LABELS, 1))
        listening = _answer(collector, Listening)
        waited, moved_on = threading.Event(), threading.Event()

        def beat() -> None:  # the tee's beat: it has waited a second for a slot
            waited.set()
            moved_on.set()

        def lead_column() -> None:
            _feed(tees[0], "v0", streams[0])
            moved_on.set()

        tees = [
            ParityTee(
                ParityLink(listening.address, listening.token, j, UNIT, patience=TIMEOUT),
                beat if j == 0 else lambda: None,
            )
            for j in range(2)
        ]
        lead = threading.Thread(target=lead_column)
        lead.start()
        assert moved_on.wait(TIMEOUT)
        if lead_waits:
            assert waited.is_set(), "column 0 ran to its end alone: it was not held"
        else:
            lead.join(TIMEOUT)
            assert not waited.is_set(), "column 0 was held although its hold ran out"
        _feed(tees[1], "v1", streams[1])
        lead.join(TIMEOUT)
        state = {"broken": [t.broken for t in tees], "rows": [t.row for t in tees]}
        got, digests, version = _closed(collector, parity_dir)
    finally:
        collector.kill()
        collector.thread.join(TIMEOUT)
    # version 3: the tees' and the collector's XXH3-128 digests of every unit of a row
    assert version == WRITTEN_VERSION == 3
    for row, (_row, payload) in enumerate(got):
        units = [s[row * UNIT : (row + 1) * UNIT].ljust(UNIT, b"\0") for s in streams]
        assert digests[row] == tuple(unit_digest(u, 3) for u in [*units, payload])
    return got, state, _after_the_data(streams, LABELS, label)


def _closed(collector: Collector, parity_dir) -> tuple[list, list, int]:
    """Close the stream (every column ended), let the collector end: ``_rows`` of the
    parity volume it wrote."""
    collector.send(Close())
    written = _answer(collector, Written)
    collector.send(Abandon())
    ((_label, name, _size),) = written.volumes
    parity = open_device(str(parity_dir))
    parity.open()
    return _rows(parity, name)


def _after_the_data(streams: list[bytes], labels: tuple[str, ...], label: str) -> list:
    """The rows the after-the-data writer makes of the same columns (volume ``v<j>``)."""
    stores = []
    for j, stream in enumerate(streams):
        dev = _memory(f"d{j}")
        dev.put(f"v{j}", stream)
        stores.append((Column(labels[j], ((f"v{j}", len(stream)),)), dev))
    old_dev = _memory("q")
    ((_l, old_name, _s),) = write_parity(SET, stores, [(label, old_dev)], unit=UNIT)
    return _rows(old_dev, old_name)[0]


def test_a_column_running_ahead_waits_for_the_others_instead_of_spilling(tmp_path, caplog):
    """Column 0 runs 20 units ahead of column 1 with a window of 2 rows: once its
    slots are held it waits (its core would go to the column behind) and nothing
    spills; when column 1 comes, everything drains and the rows are right."""
    caplog.set_level("DEBUG", logger="parbackup.engine.paritystream")
    got, state, want = _run(tmp_path, hold=TIMEOUT, lead_waits=True)
    assert state == {"broken": ["", ""], "rows": [20, 7]}
    assert got == want and len(got) == 20
    assert "20 rows, 0 spilled; columns held past 60 s: [0, 0]" in caplog.text


def test_a_column_held_past_its_hold_spills_and_goes_on(tmp_path, caplog):
    """With a short hold, column 0 alone runs to its end: held, then spilled (the
    device really is faster); the rows are still right."""
    caplog.set_level("DEBUG", logger="parbackup.engine.paritystream")
    got, state, want = _run(tmp_path, hold=0.05, lead_waits=False)
    assert state == {"broken": ["", ""], "rows": [20, 7]}
    assert got == want and len(got) == 20
    line = next(r.getMessage() for r in caplog.records if "spilled" in r.getMessage())
    spilled = int(line.split(", ")[1].split()[0])
    assert spilled >= 10, line
    assert line.endswith("[1, 0]"), line


def _linked(tmp_path, slots: int) -> tuple[Collector, list[ParityTee]]:
    """A collector thread with its parity device, and a tee linked for each column."""
    parity_dir = tmp_path / "parity"
    parity_dir.mkdir()
    collector = Collector(ParitySpec((str(parity_dir),), UNIT, window=2, timeout=TIMEOUT))
    _answer(collector, Opened)
    collector.send(Begin(SET, LABELS, 1))
    listening = _answer(collector, Listening)
    link = (listening.address, listening.token)
    return collector, [
        ParityTee(ParityLink(*link, j, UNIT, slots=slots, patience=TIMEOUT)) for j in range(2)
    ]


def test_a_tee_whose_collector_went_away_stops_forwarding_and_never_raises(tmp_path):
    """The tee reads the slots given back only once it has none left: a collector gone
    meanwhile (given up, its links closed) is found then, or by the next send; the tee
    stops forwarding and its writes go on (parity is never a reason for a device to
    fail), instead of waiting out its patience."""
    collector, (tee, _other) = _linked(tmp_path, slots=2)
    try:
        unit = random.Random(3).randbytes(UNIT)
        tee.feed(unit)  # row 0: summed, its slot given back (unread yet)
        collector.send(Abandon())
        assert collector.join(TIMEOUT)
        for _ in range(4):  # more units than slots
            tee.feed(unit)
        assert "the parity collector went away" in tee.broken
        assert not tee.active and tee.conn is None and tee.map is None
    finally:
        collector.kill()


def test_a_malformed_message_of_a_tee_breaks_the_stream_not_the_collector(tmp_path):
    """A tee's message the collector cannot read (a slot out of range, a cut entry)
    ends that column's stream: Close is answered with Failed, saying why, and the
    backup writes its parity after the data; the collector's thread does not die of it."""
    for bad in (b"u" + bytes(5), b"u" + (99).to_bytes(4, "little") + bytes(8 + 16), b"x"):
        sub = tmp_path / bad[:2].hex() / str(len(bad))
        sub.mkdir(parents=True)
        collector, tees = _linked(sub, slots=2)
        try:
            assert tees[0].conn is not None
            tees[0].conn.send_bytes(bad)
            # the collector closes that link once it read the message
            assert tees[0].poller is not None and tees[0].poller.poll(TIMEOUT * 1000)
            collector.send(Close())
            failed = _answer(collector, Failed)
            assert failed.error.startswith("column 0 ended early"), failed.error
        finally:
            collector.kill()
            collector.thread.join(TIMEOUT)


def test_columns_ended_before_the_collector_took_their_links_are_not_missing(tmp_path, monkeypatch):
    """Small columns on a busy machine: every mover links, sends all its units and its
    end and commits before the collector's thread took any link (here it takes none
    until Close: a starved thread, or Close read before the listener in one wakeup).
    Each mover connected before it committed, so at Close every link waits to be taken:
    none is "never linked" and the parity is written while writing. (The collector
    took one link a wakeup and judged the columns at Close without taking the links
    waiting: the backup wrote its parity after the data, "column 0 never linked".)"""
    seen = threading.Event()
    accept = _Collector.accept

    def starved_accept(self, listener) -> None:
        if self.closing:
            accept(self, listener)
        else:
            seen.set()

    monkeypatch.setattr(_Collector, "accept", starved_accept)
    labels = ("0a" * 16, "0b" * 16, "0c" * 16)
    rnd = random.Random(11)
    streams = [rnd.randbytes(2 * UNIT + 7 * j) for j in range(3)]
    parity_dir = tmp_path / "parity"
    parity_dir.mkdir()
    collector = Collector(ParitySpec((str(parity_dir),), UNIT, window=2, timeout=TIMEOUT))
    try:
        (label,) = _answer(collector, Opened).labels
        collector.send(Begin(SET, labels, 1))
        listening = _answer(collector, Listening)
        link = (listening.address, listening.token)
        tees = [ParityTee(ParityLink(*link, j, UNIT, patience=TIMEOUT)) for j in range(3)]
        assert seen.wait(TIMEOUT)  # the collector woke for the links, and took none
        for j, tee in enumerate(tees):
            _feed(tee, f"v{j}", streams[j])  # fewer units than slots: no tee waits
        assert [(t.ended, t.broken) for t in tees] == [(True, "")] * 3
        got = _closed(collector, parity_dir)[0]
    finally:
        collector.kill()
        collector.thread.join(TIMEOUT)
    assert got == _after_the_data(streams, labels, label) and len(got) == 3

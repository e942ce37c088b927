"""One conformance suite that every device kind runs (restic's backend test suite, in small).

Each test writes through the Device interface, closes the device, opens it again where it
can be read back (a tape written into a FIFO is read from the captured image) and checks
the real bytes. Remote kinds run against real servers on loopback (tests/servers.py).
"""

from __future__ import annotations

import random

import pytest
from kinds import (
    Kind,
    file_kind,
    memory_kind,
    s3_kind,
    sftp_kind,
    tape_fifo_kind,
    tape_file_kind,
)

from parbackup.devices.base import LABEL_NAME, Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.errors import DeviceError, DeviceFullError, DeviceMissingError

KINDS = ["memory", "file", "tape-file", "tape-fifo", "sftp", "s3"]


@pytest.fixture(params=KINDS)
def kind(request, tmp_path) -> Kind:
    name = request.param
    if name == "memory":
        return memory_kind()
    if name == "file":
        return file_kind(tmp_path)
    if name == "tape-file":
        return tape_file_kind(tmp_path)
    if name == "tape-fifo":
        return tape_fifo_kind(tmp_path)
    if name == "sftp":
        return sftp_kind(request.getfixturevalue("sshd"), tmp_path)
    return s3_kind(request.getfixturevalue("s3_server"))


def opened(url: str) -> Device:
    dev = open_device(url)
    dev.open()
    return dev


def reopen(kind: Kind, dev: Device) -> Device:
    """Close ``dev`` and open it again where it can be read back."""
    dev.close()
    return opened(kind.readback(dev.url.raw))


BIG = random.Random(7).randbytes(3 * 1024 * 1024 + 12345)


def test_write_read_list_label(kind: Kind) -> None:
    dev = opened(kind.url())
    label = dev.ensure_label()
    assert label.kind == dev.scheme and len(label.label) == 32
    dev.put("a/one", b"hello")
    dev.put("a/two", b"")
    writer = dev.create("sets/x/vol-0001.pbv")
    for at in range(0, len(BIG), 100_003):  # uneven chunks
        writer.write(BIG[at : at + 100_003])
    writer.commit()
    dev.put("b", b"tail")

    back = reopen(kind, dev)
    try:
        assert back.read_label() == label
        listing = {o.name: o.size for o in back.list("")}
        assert listing == {
            LABEL_NAME: listing[LABEL_NAME],
            "a/one": 5,
            "a/two": 0,
            "sets/x/vol-0001.pbv": len(BIG),
            "b": 4,
        }
        assert sorted(o.name for o in back.list("a/")) == ["a/one", "a/two"]
        assert back.list("nothing/") == []
        assert back.get("a/one") == b"hello"
        assert back.get("a/two") == b""
        assert back.read("sets/x/vol-0001.pbv", 1_000_000, 70_000) == BIG[1_000_000:1_070_000]
        assert back.read("sets/x/vol-0001.pbv", len(BIG) - 10, 100) == BIG[-10:]
        assert back.size("sets/x/vol-0001.pbv") == len(BIG)
        with back.open_read("sets/x/vol-0001.pbv") as stream:
            assert stream.read() == BIG
        assert back.get("b") == b"tail"
    finally:
        back.close()


def test_missing_object(kind: Kind) -> None:
    dev = opened(kind.url())
    dev.ensure_label()
    dev.put("here", b"x")
    back = reopen(kind, dev)
    try:
        with pytest.raises(DeviceMissingError):
            back.read("not-here", 0, 10)
        with pytest.raises(DeviceMissingError):
            back.size("not-here")
        assert back.get("here") == b"x"
    finally:
        back.close()


def test_aborted_object_is_not_kept(kind: Kind) -> None:
    dev = opened(kind.url())
    dev.ensure_label()
    writer = dev.create("gone")
    writer.write(b"partial" * 1000)
    writer.abort()
    dev.put("kept", b"yes")
    back = reopen(kind, dev)
    try:
        names = {o.name for o in back.list("")}
        assert "gone" not in names and "kept" in names
        assert back.get("kept") == b"yes"
    finally:
        back.close()


def test_capacity_caps_space_and_writes(kind: Kind) -> None:
    cap = 2_000_000
    dev = opened(kind.url(f"capacity={cap}"))
    try:
        dev.ensure_label()
        before = dev.space()
        assert before.capacity == cap
        assert before.free is not None and 0 < before.free <= cap
        dev.put("some", b"s" * 300_000)
        after = dev.space()
        assert after.free is not None and after.free <= before.free - 300_000
        writer = dev.create("too-big")
        with pytest.raises(DeviceFullError):
            for _ in range(100):
                writer.write(b"f" * 65536)
            writer.commit()
        writer.abort()
    finally:
        dev.close()
        kind.readback(dev.url.raw)


def test_unreachable(kind: Kind) -> None:
    if kind.unreachable is None:
        pytest.skip(f"{kind.name} devices are always reachable")
    dev = open_device(kind.unreachable)
    try:
        with pytest.raises(DeviceError):
            dev.open()
            dev.ensure_label()
    finally:
        dev.close()


def test_replace_and_delete(kind: Kind) -> None:
    if not kind.rewrite:
        pytest.skip(f"{kind.name} is written once, front to back")
    dev = opened(kind.url())
    try:
        dev.put("x", b"first")
        dev.put("x", b"second!")
        assert dev.get("x") == b"second!"
        dev.delete("x")
        dev.delete("x")  # missing is fine
        assert dev.list("x") == []
    finally:
        dev.close()


def test_read_only_open(kind: Kind) -> None:
    """``open(write=False)`` reads everything back and writes nothing (read-only media)."""
    dev = opened(kind.url())
    label = dev.ensure_label()
    dev.put("sets/x/vol-0001.pbv", BIG[:100_000])
    dev.close()
    back = open_device(kind.readback(dev.url.raw))
    back.open(write=False)
    try:
        assert back.read_label() == label
        assert {o.name: o.size for o in back.list("")} == {
            LABEL_NAME: back.size(LABEL_NAME),
            "sets/x/vol-0001.pbv": 100_000,
        }
        with back.open_read("sets/x/vol-0001.pbv") as stream:
            assert stream.read() == BIG[:100_000]
        if kind.name in ("file", "tape-file", "tape-fifo"):
            with pytest.raises(DeviceError, match="reading only"):
                back.create("sets/y/vol-0001.pbv").write(b"no")
    finally:
        back.close()
    again = open_device(kind.readback(back.url.raw))
    again.open(write=False)
    try:  # nothing was added by the read-only open (no probe file, no new tape)
        assert {o.name for o in again.list("")} == {LABEL_NAME, "sets/x/vol-0001.pbv"}
    finally:
        again.close()


def test_a_writer_keeps_none_of_the_callers_buffer(kind: Kind) -> None:
    """``ObjectWriter.write``'s contract (devices/base.py): once it returns, ``data`` is
    the caller's again. The mover writes every gather of small records from one buffer
    it refills at once (engine/mover.py): a writer, or a wrapper (retry, throttle), that
    kept a view to send later would store the next records' bytes in these' place (a
    volume whose records fail their digests). Here each write's buffer is overwritten
    the moment ``write`` returns, through the retry and throttle wrappers."""
    dev = RetryingDevice(opened(kind.url("limit=1G")))
    dev.ensure_label()
    buf = bytearray(256 * 1024)
    writer = dev.create("sets/x/vol-0001.pbv")
    for at in range(0, len(BIG), 70_001):
        part = BIG[at : at + 70_001]
        buf[: len(part)] = part
        writer.write(memoryview(buf)[: len(part)])
        buf[: len(part)] = b"\xee" * len(part)  # the next gather, at once
    writer.commit()
    back = reopen(kind, dev)
    try:
        with back.open_read("sets/x/vol-0001.pbv") as stream:
            assert stream.read() == BIG
    finally:
        back.close()

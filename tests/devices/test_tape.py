"""Tape specifics: one pass from a pipe, whole blocks, damage, FIFOs without a partner."""

from __future__ import annotations

import os
import time

import pytest

from parbackup.devices.registry import open_device
from parbackup.devices.tape.stream import BlockWriter
from parbackup.errors import DeviceError, DeviceFullError, DeviceMissingError
from servers import FifoCapture, feed_fifo


def write_tape(url: str, objects: dict[str, bytes]) -> str:
    """Write a labelled tape holding ``objects`` in order; its label."""
    dev = open_device(url)
    dev.open()
    label = dev.ensure_label().label
    for name, data in objects.items():
        dev.put(name, data)
    dev.close()
    return label


BLOCK = 4096
OBJECTS = {"a": b"A" * 300_000, "b": b"B" * 5, "c": bytes(range(256)) * 4000}


def test_pipe_is_read_in_one_pass(tmp_path):
    image = tmp_path / "t.img"
    label = write_tape(f"tape://{image}", OBJECTS)
    fifo = feed_fifo(tmp_path, image)
    dev = open_device(f"tape://{fifo}")
    dev.open()
    try:
        assert dev.read_label().label == label
        with dev.open_read("b") as s:
            assert s.read() == OBJECTS["b"]
        assert dev.read("c", 1000, 10) == OBJECTS["c"][1000:1010]
        with pytest.raises(DeviceMissingError, match="front to back"):
            dev.get("a")  # behind us, and a pipe cannot rewind
    finally:
        dev.close()


def test_plain_file_image_rewinds(tmp_path):
    image = tmp_path / "t.img"
    write_tape(f"tape://{image}", OBJECTS)
    dev = open_device(f"tape://{image}")
    dev.open()
    try:
        assert dev.get("c") == OBJECTS["c"]
        assert dev.get("a") == OBJECTS["a"]
    finally:
        dev.close()


def test_written_in_whole_blocks(tmp_path):
    image = tmp_path / "t.img"
    write_tape(f"tape://{image}?block=64K", OBJECTS)
    assert image.stat().st_size % 64_000 == 0


def test_cut_short_tape_is_a_device_error(tmp_path):
    image = tmp_path / "t.img"
    write_tape(f"tape://{image}", OBJECTS)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    dev = open_device(f"tape://{image}")
    dev.open()
    try:
        with pytest.raises(DeviceError):
            dev.get("c")
    finally:
        dev.close()


def test_not_a_tape(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world, not a tape" * 100)
    dev = open_device(f"tape://{junk}")
    dev.open()
    with pytest.raises(DeviceError, match="not a parbackup tape"):
        dev.read_label()
    dev.close()


def test_fifo_without_reader_or_writer(tmp_path):
    import os

    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    dev = open_device(f"tape://{fifo}?wait=0.1")  # no process ever opens the other end
    dev.open()
    started = time.monotonic()
    with pytest.raises(DeviceMissingError, match="nothing is reading"):
        dev.ensure_label()
    with pytest.raises(DeviceMissingError, match="nothing is writing"):
        dev.read_label()
    assert time.monotonic() - started < 30
    dev.close()


def test_capture_helper_round_trip(tmp_path):
    cap = FifoCapture(tmp_path)
    label = write_tape(cap.url, OBJECTS)
    image = cap.wait()
    dev = open_device(f"tape://{image}")
    dev.open()
    assert dev.read_label().label == label
    assert {o.name for o in dev.list("")} >= set(OBJECTS)
    dev.close()


def test_a_drive_that_takes_nothing_is_full_not_a_loop(tmp_path, monkeypatch):
    """A write that takes no byte (a drive at its end: no real file does this, so the
    descriptor's ``os.write`` is wrapped) ends the stream with DeviceFullError; the
    writer used to retry it for ever. Writes before the end go to the real file."""
    image = tmp_path / "t.img"
    fd = os.open(image, os.O_WRONLY | os.O_CREAT, 0o600)
    real, zeros = os.write, []

    def drive(to: int, data) -> int:
        if to != fd or os.fstat(fd).st_size < 2 * BLOCK:
            return real(to, data)
        zeros.append(len(data))
        if len(zeros) > 100:
            raise AssertionError("the writer retries a write that takes nothing")
        return 0

    monkeypatch.setattr(os, "write", drive)
    try:
        writer = BlockWriter(fd, BLOCK, None, "tape://t.img")
        writer.frame(b"D", bytes(BLOCK + 10))
        with pytest.raises(DeviceFullError, match="No space left"):
            writer.frame(b"D", bytes(2 * BLOCK))
        assert writer.broken and writer.flushed == 2 * BLOCK and len(zeros) == 1
        with pytest.raises(DeviceError, match="broke earlier"):
            writer.frame(b"C")
    finally:
        os.close(fd)

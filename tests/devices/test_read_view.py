"""``Device.read_view``: readers read each span into one reused buffer (readback/reader.py).

A directory device reads straight into the caller's buffer; every other kind, and every
wrapper that changes reads (faults), still answers through its own ``read``, so no fault
is skipped by the faster path. The throttle reads into the buffer too, and counts what
it read against its limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.throttle import TokenBucket
from parbackup.errors import DeviceError, DeviceMissingError


def _device_with(tmp_path: Path, data: bytes, url: str = "") -> RetryingDevice:
    (tmp_path / "d").mkdir()
    device = RetryingDevice(open_device(url or str(tmp_path / "d")))
    device.open()
    device.ensure_label()
    writer = device.create("sets/x/v.pbv")
    writer.write(data)
    writer.commit()
    return device


def test_a_directory_device_reads_into_the_callers_buffer(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    device = _device_with(tmp_path, data)
    buf = bytearray(1 << 20)
    view = device.read_view("sets/x/v.pbv", 1000, 5000, buf)
    assert view.obj is buf and bytes(view) == data[1000:6000]
    again = device.read_view("sets/x/v.pbv", 7, 10, buf)  # the same buffer, reused
    assert again.obj is buf and bytes(again) == data[7:17]
    short = device.read_view("sets/x/v.pbv", len(data) - 3, 100, buf)  # the object ends
    assert bytes(short) == data[-3:]
    bigger = device.read_view("sets/x/v.pbv", 0, len(data), bytearray(10))  # no room
    assert bytes(bigger) == data
    with pytest.raises(DeviceMissingError):
        device.read_view("sets/x/none.pbv", 0, 10, buf)


def test_a_wrapper_that_changes_reads_sees_read_view(tmp_path):
    """A broken faulty device fails ``read_view`` as it fails ``read``."""
    url = f"faulty+file://{tmp_path / 'd'}"
    device = _device_with(tmp_path, b"x" * 4096, url)
    buf = bytearray(8192)
    assert bytes(device.read_view("sets/x/v.pbv", 0, 10, buf)) == b"x" * 10
    device.inner.failed = True  # the device breaks now
    with pytest.raises(DeviceError, match="injected"):
        device.read_view("sets/x/v.pbv", 0, 10, buf)


def test_a_throttled_device_reads_into_the_callers_buffer_and_counts_it(tmp_path):
    """``?limit=`` kept the fast path (fresh bytes a span cost restore readers 90 MB)."""
    data = bytes(range(256)) * 4096
    device = _device_with(tmp_path, data, f"{tmp_path / 'd'}?limit=1G")
    bucket = device.inner.bucket = TokenBucket(1 << 30, clock=lambda: 0.0)  # time stands
    buf = bytearray(1 << 20)
    view = device.read_view("sets/x/v.pbv", 1000, 5000, buf)
    assert view.obj is buf and bytes(view) == data[1000:6000]
    assert bucket.tokens == bucket.burst - 5000  # the bytes read were taken from the limit

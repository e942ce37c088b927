"""Failover seen from the library: durable records of a failed device leave the catalog,
the failure is logged and reported as an event, and transient errors are retried."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from conftest import make_tree, snapshot
from parbackup import BackupOptions, Catalog, RestoreOptions, run_backup, run_restore
from parbackup.devices.memory import MemoryDevice
from parbackup.devices.retry import RetryingDevice, RetryPolicy
from parbackup.devices.url import parse_url
from parbackup.errors import DeviceError, DeviceFullError, TransientDeviceError
from parbackup.progress import DeviceFailed


def test_durable_records_of_a_failed_device_are_written_again(tmp_path, caplog):
    """With a checkpoint every 64 KiB the failed device had made records durable (and
    catalogued) before it broke; they leave the catalog and are written elsewhere, so the
    set restores with the failed device gone."""
    src = make_tree(tmp_path / "src", seed=3, files=30, max_size=150_000, big=(1_500_000,))
    devs = [tmp_path / f"d{i}" for i in range(3)]
    for d in devs:
        d.mkdir()
    bad = f"faulty+file://{devs[1]}?fail_after=600K"
    events = []
    options = BackupOptions(checkpoint_bytes=64 << 10)
    caplog.set_level(logging.WARNING, logger="parbackup")
    with Catalog(str(tmp_path / "cat.sqlite")) as cat:
        report = run_backup([str(src)], [str(devs[0]), bad, str(devs[2])], cat, options,
                            events.append)  # fmt: skip
        assert report.status == "degraded" and report.exit_code == 3
        failed = next(d for d in report.devices if d.url == bad)
        assert failed.status == "failed" and failed.bytes == 0
        labels = {r.label for _, r in cat.records(report.set_id)}
        assert failed.label not in labels and len(labels) == 2
        shutil.rmtree(devs[1])
        run_restore(cat, RestoreOptions(target=str(tmp_path / "out")))
    back = tmp_path / "out" / str(src.resolve()).lstrip("/")
    assert snapshot(back) == snapshot(src)
    (event,) = [e for e in events if isinstance(e, DeviceFailed)]
    assert event.device == bad and event.redirected == sum(failed.redirected.values())
    assert any(
        r.levelno == logging.WARNING and "device failed" in r.getMessage() and bad in r.getMessage()
        for r in caplog.records
    )


class _Flaky(MemoryDevice):
    """A memory device whose reads fail transiently ``fails`` times, then work."""

    def __init__(self, fails: int, error: type[DeviceError] = TransientDeviceError) -> None:
        super().__init__(parse_url("memory://retry-test"))
        self.fails, self.error, self.calls = fails, error, 0

    def read(self, name: str, offset: int, length: int) -> bytes:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error("injected")
        return super().read(name, offset, length)


def test_transient_errors_are_retried_with_backoff():
    sleeps: list[float] = []
    inner = _Flaky(fails=3)
    inner.put("x", b"data")
    dev = RetryingDevice(inner, RetryPolicy(attempts=5, first_delay=0.1, sleep=sleeps.append))
    assert dev.read("x", 0, 4) == b"data"
    assert sleeps == [0.1, 0.2, 0.4]


def test_retries_run_out_and_the_error_becomes_permanent():
    sleeps: list[float] = []
    dev = RetryingDevice(_Flaky(fails=99), RetryPolicy(attempts=4, sleep=sleeps.append))
    with pytest.raises(DeviceError) as info:
        dev.read("x", 0, 4)
    assert not info.value.transient and "gave up after 4 attempts" in str(info.value)
    assert len(sleeps) == 3


def test_permanent_errors_are_not_retried():
    inner = _Flaky(fails=1, error=DeviceFullError)
    dev = RetryingDevice(inner, RetryPolicy(sleep=lambda s: pytest.fail("slept")))
    with pytest.raises(DeviceFullError):
        dev.read("x", 0, 4)
    assert inner.calls == 1


def test_wrappers_keep_the_kind(tmp_path: Path):
    """The retry and fault wrappers look like the device they wrap."""
    from parbackup.devices.registry import open_device

    (tmp_path / "d").mkdir()
    faulty = open_device(f"faulty+file://{tmp_path / 'd'}?capacity=1M&fail_after=1050")
    wrapped = RetryingDevice(faulty)
    assert wrapped.scheme == faulty.scheme == "file"
    assert wrapped.capabilities == faulty.inner.capabilities
    assert faulty.capacity == 1_000_000
    wrapped.open()
    label = wrapped.ensure_label()
    assert wrapped.read_label() == label
    writer = wrapped.create("sets/x/v.pbv")
    writer.write(b"a" * 1000)
    with pytest.raises(DeviceError, match="Input/output error"):
        writer.write(b"b" * 100)
    assert (
        tmp_path / "d" / "sets/x/v.pbv"
    ).stat().st_size == 1050  # the part before the fault was written

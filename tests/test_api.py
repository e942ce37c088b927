"""Pins the public API, and drives a backup and restore through it (REQUIREMENTS S2)."""

from __future__ import annotations

import os
import threading
import time

import parbackup
from conftest import restored_root, snapshot

EXPECTED = {
    "BackupFailedError",
    "BackupOptions",
    "BackupReport",
    "Catalog",
    "CatalogError",
    "DeviceError",
    "Order",
    "ParbackupError",
    "PlanError",
    "RestoreError",
    "RestoreOptions",
    "RestoreReport",
    "Strategy",
    "UsageError",
    "VerifyReport",
    "__version__",
    "open_device",
    "plan",
    "restore_to_stream",
    "run_backup",
    "run_image_restore",
    "run_restore",
    "run_stream_backup",
    "run_verify",
}


def test_exported_members_are_pinned():
    assert set(parbackup.__all__) == EXPECTED
    for name in parbackup.__all__:
        assert getattr(parbackup, name) is not None


def test_library_round_trip(tmp_path, tree, device_dirs):
    devs = [str(d) for d in device_dirs(2)]
    with parbackup.Catalog(str(tmp_path / "c.sqlite")) as cat:
        report = parbackup.run_backup(
            [str(tree)], devs, cat, parbackup.BackupOptions(strategy=parbackup.Strategy.THRESHOLD)
        )
        assert report.status == "complete" and report.exit_code == 0
        assert parbackup.run_verify(cat).status == "ok"
        out = tmp_path / "out"
        restored = parbackup.run_restore(cat, parbackup.RestoreOptions(target=str(out)))
        assert restored.status == "ok"
    assert snapshot(restored_root(out, tree)) == snapshot(tree)


def test_a_long_lived_process_keeps_no_thread_or_descriptor_per_run(tmp_path, tree, device_dirs):
    """Backing up, verifying and restoring again and again from one process (a service
    using the library) leaves no send thread or socket behind per worker: every run
    releases its movers' and readers' channels."""
    devs = [str(d) for d in device_dirs(2)]

    def held() -> tuple[int, int]:
        """Threads and descriptors, once every released send thread has ended (each
        closes its channel and ends on its own: wait for that, up to 10 s in all)."""
        deadline = time.monotonic() + 10
        for t in threading.enumerate():
            if t.name.startswith("send-"):
                t.join(max(0.0, deadline - time.monotonic()))
        return threading.active_count(), len(os.listdir("/proc/self/fd"))

    with parbackup.Catalog(str(tmp_path / "c.sqlite")) as cat:
        parbackup.run_backup([str(tree)], devs, cat)  # warm up: fork server, imports
        assert parbackup.run_verify(cat).status == "ok"
        before = held()
        for i in range(3):
            assert parbackup.run_backup([str(tree)], devs, cat).status == "complete"
            assert parbackup.run_verify(cat).status == "ok"
            out = tmp_path / f"out{i}"
            assert (
                parbackup.run_restore(cat, parbackup.RestoreOptions(target=str(out))).status == "ok"
            )
        after = held()
    # 3 rounds of 2 movers and 2 x 2 readers leaked 18 threads and as many sockets before
    assert after == before

"""Pins the public API, and drives a backup and restore through it (REQUIREMENTS S2)."""

from __future__ import annotations

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

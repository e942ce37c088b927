"""parbackup: spread one backup over several devices at once, and restore it.

The library API is what this module exports (``__all__``); everything else is private
and may change. Typical use::

    from parbackup import BackupOptions, Catalog, RestoreOptions, run_backup, run_restore

    with Catalog("catalog.sqlite") as cat:
        report = run_backup(["/srv/data"], ["/mnt/d1", "/mnt/d2"], cat, BackupOptions())
        run_restore(cat, RestoreOptions(target="/tmp/back"))
"""

import logging

__version__ = "0.1.0"

import importlib
from typing import Any

# Exported names -> the module defining them, imported on first use (PEP 562): a worker
# process (parbackup.workers) imports this package first and must not pay for all of it.
_EXPORTS = {
    "Catalog": "parbackup.catalog",
    "open_device": "parbackup.devices.registry",
    "run_backup": "parbackup.engine.backup",
    "BackupOptions": "parbackup.engine.report",
    "BackupReport": "parbackup.engine.report",
    "run_stream_backup": "parbackup.engine.stream",
    "BackupFailedError": "parbackup.errors",
    "CatalogError": "parbackup.errors",
    "DeviceError": "parbackup.errors",
    "ParbackupError": "parbackup.errors",
    "PlanError": "parbackup.errors",
    "RestoreError": "parbackup.errors",
    "UsageError": "parbackup.errors",
    "Order": "parbackup.model",
    "Strategy": "parbackup.model",
    "plan": "parbackup.plan",
    "run_image_restore": "parbackup.readback.image",
    "RestoreOptions": "parbackup.readback.restore",
    "RestoreReport": "parbackup.readback.restore",
    "run_restore": "parbackup.readback.restore",
    "restore_to_stream": "parbackup.readback.stream",
    "VerifyReport": "parbackup.readback.verify",
    "run_verify": "parbackup.readback.verify",
}


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'parbackup' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
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
]

# A library logs; the application decides where records go (none by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())

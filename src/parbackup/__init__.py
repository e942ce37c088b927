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

# Where each public name lives. Imported on first use (PEP 562), so a worker process
# (a mover, a reader) that imports one module of the package does not load them all.
_EXPORTS = {
    "Catalog": "parbackup.catalog",
    "open_device": "parbackup.devices.registry",
    "run_backup": "parbackup.engine.backup",
    "run_stream_backup": "parbackup.engine.backup",
    "run_image_restore": "parbackup.readback.image",
    "BackupOptions": "parbackup.engine.report",
    "BackupReport": "parbackup.engine.report",
    "RestoreOptions": "parbackup.readback.restore",
    "RestoreReport": "parbackup.readback.restore",
    "run_restore": "parbackup.readback.restore",
    "restore_to_stream": "parbackup.readback.stream",
    "VerifyReport": "parbackup.readback.verify",
    "run_verify": "parbackup.readback.verify",
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
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> object:
    """Load a public name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'parbackup' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# A library logs; the application decides where records go (none by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())

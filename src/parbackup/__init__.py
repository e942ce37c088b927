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

from parbackup.catalog import Catalog
from parbackup.devices.registry import open_device
from parbackup.engine.backup import run_backup
from parbackup.engine.report import BackupOptions, BackupReport
from parbackup.engine.stream import run_stream_backup
from parbackup.errors import (
    BackupFailedError,
    CatalogError,
    DeviceError,
    ParbackupError,
    PlanError,
    RestoreError,
    UsageError,
)
from parbackup.model import Order, Strategy
from parbackup.plan import plan
from parbackup.readback.image import run_image_restore
from parbackup.readback.restore import RestoreOptions, RestoreReport, run_restore
from parbackup.readback.stream import restore_to_stream
from parbackup.readback.verify import VerifyReport, run_verify

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

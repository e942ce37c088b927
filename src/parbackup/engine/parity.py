"""Parity for a backup set (``backup --parity m``, REQUIREMENTS K1).

Layout: dedicated parity devices (as Amanda's RAIT): of the n ``--device`` URLs, the
last m hold parity and the planner spreads the data over the first n-m. After every
data device has committed its volumes, each surviving data device is one column
(redundancy/layout.py) and one parity volume is written on each parity device, one row
at a time (redundancy/stripe.py). The catalog remembers the stripe (``set_parity``);
the parity volumes describe themselves too.

Why after the data, not while it is written: the columns are then final, so a data
device that failed mid-backup (its work redirected, R1-R4), time balance (unequal
columns are zero-padding) and redirected work need no rule of their own, and the set
keeps all m parities after a data device failed. The price is a second read of the
data volumes (bench/parity.py measures it); computing rows while writing is the next
step (docs/GUARANTEES.md).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence

from parbackup.catalog import Catalog
from parbackup.crypto.codec import CodecSpec
from parbackup.devices.base import Device
from parbackup.engine.catalog_copy import catalog_copies
from parbackup.engine.devices import OpenDevice, close_all, devices_for_labels, open_devices
from parbackup.errors import DeviceError, FormatError, UsageError
from parbackup.redundancy.codec import CODEC, check_params
from parbackup.redundancy.layout import UNIT, Column, row_count
from parbackup.redundancy.stripe import write_parity

log = logging.getLogger(__name__)


def copy_catalog(
    catalog: Catalog, devices: Sequence[Device], codec: CodecSpec | None, key_file: bytes
) -> None:
    """A copy of the catalog (now knowing the set's parity) on each parity device (X2):
    sealed, with the key file beside it, when the set is encrypted."""
    with tempfile.TemporaryDirectory(prefix="parbackup-") as tmp:
        for name, path in catalog_copies(catalog, tmp, codec, key_file):
            for dev in devices:
                with open(path, "rb") as fh:
                    dev.put_stream(name, fh)


def split_devices(urls: Sequence[str], parity: int) -> tuple[list[str], list[str]]:
    """The data and the parity device URLs of a run with ``--parity parity``."""
    if parity <= 0:
        return list(urls), []
    check_params(len(urls) - parity, parity)
    return list(urls[:-parity]), list(urls[-parity:])


def column_of(device: OpenDevice, set_hex: str) -> Column:
    """A data device's column: its volumes of the set in sequence order."""
    vols = sorted(
        (o.name, o.size) for o in device.device.list(f"sets/{set_hex}/") if o.name.endswith(".pbv")
    )
    return Column(device.label.label, tuple(vols))


def add_parity(
    catalog: Catalog,
    set_hex: str,
    data: Sequence[tuple[str, str]],
    parity_urls: Sequence[str],
    *,
    unit: int = UNIT,
    codec: CodecSpec | None = None,
    key_file: bytes = b"",
) -> dict:
    """Write the set's parity volumes; the ``parity`` part of the backup report.

    ``data``: (label, url) of every data device that holds the set. Never raises for a
    device problem: the report then says the set has no redundancy, and why.
    """
    m = len(parity_urls)
    started = time.monotonic()
    report: dict = {"m": m, "redundancy": 0, "devices": []}
    opened: dict[str, OpenDevice] = {}
    alive: list[OpenDevice] = []
    try:
        opened, missing = devices_for_labels(dict(data), [], write=False)
        if missing:
            raise DeviceError("; ".join(f"{k}: {v}" for k, v in missing.items()))
        columns = [column_of(opened[label], set_hex) for label, _url in data]
        alive, dead = open_devices(list(parity_urls), create_labels=True, write=True)
        if dead:
            raise DeviceError("; ".join(f"{d.url}: {d.reason}" for d in dead))
        labels = [d.label.label for d in alive]
        if set(labels) & {c.label for c in columns}:
            raise UsageError("a parity device is also a data device of the set")
        created_ns = time.time_ns()
        written = write_parity(
            bytes.fromhex(set_hex),
            [(c, opened[c.label].device) for c in columns],
            [(d.label.label, d.device) for d in alive],
            unit=unit,
            created_ns=created_ns,
        )
        for d in alive:
            catalog.remember_device(d.label.label, d.url, d.device.scheme)
        info = {
            "codec": CODEC,
            "k": len(columns),
            "m": m,
            "unit": unit,
            "columns": [c.label for c in columns],
            "volumes": [c.to_json() for c in columns],
            "rows": row_count(columns, unit),
            "created_ns": created_ns,
            "parity": [
                {"label": label, "url": d.url, "name": name, "size": size}
                for d, (label, name, size) in zip(alive, written, strict=True)
            ],
        }
        catalog.set_parity(set_hex, info)
        copy_catalog(catalog, [d.device for d in alive], codec, key_file)
        report.update(
            redundancy=m,
            k=len(columns),
            devices=[{"url": d.url, "label": d.label.label} for d in alive],
            bytes=sum(size for _l, _n, size in written),
        )
    except (DeviceError, FormatError, UsageError) as exc:
        log.warning("parity not written: %s", exc)
        report["error"] = f"parity not written: {exc}"
    finally:
        close_all(list(opened.values()) + alive)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report

"""Repair: rebuild a lost device's volumes of a parity set onto a new device (K2).

The replacement device is labelled with the lost device's label, so every reader and
the catalog find it as they found the old one (D4); the catalog then remembers its URL.
The columns are rebuilt one row at a time (readback/recover.py), so memory stays one
row whatever the volumes' size; a tape is written front to back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from parbackup.catalog import Catalog
from parbackup.devices.base import Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.url import parse_url
from parbackup.errors import FormatError, ParbackupError, UsageError
from parbackup.model import Label
from parbackup.readback.recover import rebuild


@dataclass
class RepairReport:
    """The outcome of a repair; ``to_json`` gives the ``repair --json`` document."""

    set_id: str
    device: str
    label: str = ""
    status: str = "ok"
    """ok: rebuilt; nothing: no device of the set was missing; failed."""
    missing: dict[str, str] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "failed" else 0

    def to_json(self) -> dict:
        out = {
            "set": self.set_id,
            "status": self.status,
            "device": self.device,
            "label": self.label,
            "missing": [{"label": k, "error": v} for k, v in sorted(self.missing.items())],
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            out["error"] = self.error
        return out


def run_repair(
    catalog: Catalog,
    set_ref: str | None,
    new_url: str,
    *,
    lost: str = "",
    devices: Sequence[str] = (),
) -> RepairReport:
    """Rebuild the set's missing device (or the one labelled ``lost``, even if it is
    present but damaged) onto the device at ``new_url``."""
    started = time.monotonic()
    info = catalog.resolve_set(set_ref)
    # named as every device is recorded: absolute, without its secrets
    report = RepairReport(set_id=info.id, device=parse_url(new_url).display)
    if not catalog.parity(info.id):
        raise UsageError(f"set {info.id} was written without --parity: nothing to rebuild from")
    known = catalog.device_urls()
    found = rebuild(catalog, info.id, known, devices, None, survey=True)
    report.missing = dict(found.missing)
    if found.error:
        report.status, report.error = "failed", found.error
        return report
    if lost:
        matches = [label for label in known if label.startswith(lost)]
        if len(matches) != 1:
            raise UsageError(f"--lost {lost}: names {len(matches)} known devices, not one")
        label = matches[0]
    elif not found.missing:
        report.status = "nothing"
        report.seconds = time.monotonic() - started
        return report
    elif len(found.missing) > 1:
        names = ", ".join(sorted(found.missing))
        raise UsageError(f"several devices are missing ({names}): name one with --lost LABEL")
    else:
        (label,) = found.missing
    report.label = label
    target = _replacement(new_url, label)
    try:
        done = rebuild(
            catalog,
            info.id,
            known,
            devices,
            lambda _label: target,
            only=[label],
            suspects=[label] if label not in found.missing else [],
        )
        if done.error or label not in done.urls:
            raise FormatError(done.error or f"{label}: nothing was rebuilt")
        catalog.remember_device(label, target.url.display, target.scheme)
    except ParbackupError as exc:
        report.status, report.error = "failed", str(exc)
    finally:
        target.close()
    report.seconds = time.monotonic() - started
    return report


def _replacement(url: str, label: str) -> Device:
    """The new device, opened for writing and labelled as the lost one. A device that
    already carries another label is refused (it belongs to something else); one that
    carries the lost label (a repair killed half way) is written again."""
    dev = RetryingDevice(open_device(url))
    dev.open(write=True)
    try:
        have = dev.read_label()
        if have is not None and have.label != label:
            raise UsageError(
                f"{dev.url.display} already carries label {have.label}: "
                "repair needs an empty device"
            )
        if have is not None and dev.capabilities.sequential:
            # a tape half written by a killed repair: it is written again from its front
            dev.close()
            dev.open(write=True)
            have = None
        if have is None:
            created = datetime.now(UTC).isoformat(timespec="seconds")
            dev.write_label(Label(label=label, created=created, kind=dev.scheme))
    except BaseException:
        dev.close()
        raise
    return dev

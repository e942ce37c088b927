"""Opening the devices of a run: URLs to open devices with labels, failures reported."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from parbackup.devices.base import ACCEPT_NEW_HOST_KEYS_ENV, Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.url import redact
from parbackup.errors import DeviceError, FormatError, UsageError
from parbackup.format import read_volume_header
from parbackup.model import Label, Space


@dataclass
class OpenDevice:
    """A device ready for the run, with its label and space as read at open time."""

    index: int
    url: str
    device: Device
    label: Label
    space: Space


@dataclass
class DeadDevice:
    """A device that could not be opened, and why."""

    index: int
    url: str
    reason: str


def accept_new_host_keys() -> None:
    """Let remote devices opened from now on in this process learn unknown host keys."""
    os.environ[ACCEPT_NEW_HOST_KEYS_ENV] = "1"


def open_devices(
    urls: list[str],
    *,
    create_labels: bool,
    require_label: bool = True,
    timeout: float = 60.0,
    write: bool = True,
) -> tuple[list[OpenDevice], list[DeadDevice]]:
    """Open every device; label it at first use when ``create_labels``.

    With ``require_label=False`` (dry runs) an unlabelled device is accepted as it is and
    nothing is written to it. With ``write=False`` (restore, verify, reading a catalog
    copy) devices are opened for reading only (``Device.open(write=False)``), so
    read-only media work; ``create_labels`` must then be False. A device whose
    ``label.json`` is gone but whose volumes remain is known by the label its volume
    headers carry (``label_from_volumes``), read-only, so its sets stay restorable.

    A configuration mistake found on opening (a directory device that is a regular file)
    is raised as UsageError once every device has been tried.

    A device that fails to open, or does not answer within ``timeout`` seconds, is
    returned as dead, not raised: the caller decides whether the run can go on without
    it. Every device is wrapped so that transient errors are retried (devices.retry).
    The same device named twice is a UsageError.
    """
    if len(set(urls)) != len(urls):
        dup = next(u for u in urls if urls.count(u) > 1)
        raise UsageError(f"device named twice: {redact(dup)}")
    if create_labels and not write:
        raise ValueError("create_labels needs write=True")
    devices = [RetryingDevice(open_device(url)) for url in urls]
    results: list[OpenDevice | DeadDevice | None] = [None] * len(urls)
    usage: list[UsageError] = []

    def open_one(index: int, device: Device) -> None:
        try:
            device.open(write)
            if create_labels:
                label = device.ensure_label()
            elif require_label or not device.capabilities.sequential:
                label = device.read_label()
                if label is None and not write and not device.capabilities.sequential:
                    label = label_from_volumes(device)
            else:
                label = None  # a dry run never reads a tape (it may be a pipe or a drive)
            if label is None and require_label:
                raise DeviceError(f"{device.url.display}: not a parbackup device (no label)")
            label = label or Label(label="", created="", kind=device.scheme)
            space = device.space()
        except UsageError as exc:
            close_quietly(device, timeout)
            usage.append(exc)
            results[index] = DeadDevice(index, device.url.display, str(exc))
            return
        except DeviceError as exc:
            close_quietly(device, timeout)
            results[index] = DeadDevice(index, device.url.display, str(exc))
            return
        except Exception as exc:  # a device kind's bug must not end the run
            close_quietly(device, timeout)
            results[index] = DeadDevice(index, device.url.display, f"internal error: {exc!r}")
            return
        results[index] = OpenDevice(index, device.url.display, device, label, space)

    # Opened at once, each in a daemon thread, so that one hung mount or host costs
    # ``timeout`` seconds at most and never blocks the run or the process exit (R1).
    threads = [
        threading.Thread(target=open_one, args=(i, d), name=f"open-{i}", daemon=True)
        for i, d in enumerate(devices)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive: list[OpenDevice] = []
    dead: list[DeadDevice] = []
    for index, res in enumerate(results):
        if isinstance(res, OpenDevice):
            alive.append(res)
        elif isinstance(res, DeadDevice):
            dead.append(res)
        else:
            reason = f"{devices[index].url.display}: no answer within {timeout:g} seconds"
            dead.append(DeadDevice(index, devices[index].url.display, reason))
    if usage:
        close_all(alive, timeout)
        raise usage[0]
    _check_unique(alive)
    return alive, dead


def label_from_volumes(device: Device, *, every: bool = False) -> Label | None:
    """The label the device's volume headers carry (its ``label.json`` was lost), or None.

    Every volume header names the device it was written on (docs/FORMAT.md), so a device
    that lost its label file can still be matched to the catalog, and its label written
    back unchanged (``restore_label``). The first readable header answers unless
    ``every``: then all are read, and headers that disagree are a DeviceError.
    """
    found: dict[str, Label] = {}
    for info in device.list("sets/"):
        if not info.name.endswith(".pbv"):
            continue
        try:
            with device.open_read(info.name, 1 << 16) as stream:
                header = read_volume_header(stream)
        except (DeviceError, FormatError):
            continue
        label = header.meta.get("label")
        if not isinstance(label, str) or not label:
            label = header.label.hex()
        created = datetime.fromtimestamp(header.created_ns / 1e9, UTC)
        stamp = created.isoformat(timespec="seconds")
        if label not in found or stamp < found[label].created:
            found[label] = Label(label=label, created=stamp, kind=device.scheme)
        if not every:
            break
    if len(found) > 1:
        raise DeviceError(
            f"{device.url.display}: its volumes carry different labels "
            f"({', '.join(sorted(found))}); restore label.json by hand"
        )
    return next(iter(found.values()), None)


def restore_label(url: str) -> Label:
    """Write back the ``label.json`` a device lost, with the label its volumes carry.

    ``Device.ensure_label`` refuses to label a device that holds volumes but no label
    (``UnlabelledDataError``); this is the recovery its message names. Every volume
    header is read and must agree. A ``label.json`` that cannot be read (emptied by a
    crash, cut short, not a label) is replaced the same way. Raises DeviceError if the
    device already has a readable label or holds no readable volume.
    """
    device = open_device(url)
    device.open()
    try:
        try:
            present = device.read_label() is not None
        except DeviceError:  # damaged: the volumes say what it was
            present = False
        if present:
            raise DeviceError(f"{device.url.display}: already has a label")
        label = label_from_volumes(device, every=True)
        if label is None:
            raise DeviceError(f"{device.url.display}: no readable volume carries a label")
        device.write_label(label)
        return label
    finally:
        device.close()


def _check_unique(alive: list[OpenDevice]) -> None:
    """UsageError when two URLs lead to the same labelled device."""
    seen: dict[str, str] = {}
    for dev in alive:
        if not dev.label.label:
            continue
        if dev.label.label in seen:
            raise UsageError(
                f"the same device is named twice: {seen[dev.label.label]} and {dev.url}"
                f" carry label {dev.label.label}"
            )
        seen[dev.label.label] = dev.url


def close_quietly(device: Device, timeout: float) -> bool:
    """Close a device in a daemon thread, waiting ``timeout`` seconds at most.

    A hung device (frozen host, dead NFS mount) may never return from ``close``; it must
    not block the run or the process exit. True if the close finished in time.
    """

    def close() -> None:
        with contextlib.suppress(Exception):
            device.close()

    thread = threading.Thread(target=close, name="close", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def close_all(devices: list[OpenDevice], timeout: float = 60.0) -> None:
    """Close every device at once, ignoring errors and giving up after ``timeout``."""
    threads = []
    for dev in devices:
        t = threading.Thread(target=close_quietly, args=(dev.device, timeout), daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def devices_for_labels(
    known: dict[str, str], overrides: list[str], *, write: bool = True
) -> tuple[dict[str, OpenDevice], dict[str, str]]:
    """Open the devices holding ``known`` labels (label -> URL last seen at).

    ``overrides`` are URLs where devices are now (restore/verify ``--device``); each is
    matched to the catalog by the label written on it, not by its URL (D4). Returns the
    open devices by label and, for labels that could not be reached, the reason.
    ``write=False`` opens them for reading only (restore, verify: read-only media
    work); the default suits callers that delete (prune, a backup's clean-up).
    """
    found: dict[str, OpenDevice] = {}
    missing: dict[str, str] = {}
    if overrides:
        alive, dead = open_devices(overrides, create_labels=False, write=write)
        for dev in alive:
            if dev.label.label in known:
                found[dev.label.label] = dev
            else:
                dev.device.close()
        for d in dead:
            missing.setdefault(f"url:{d.url}", d.reason)
    elsewhere: dict[str, OpenDevice] = {}  # label -> a known URL that now holds it
    for label, url in known.items():
        if label in found:
            continue
        try:
            alive, dead = open_devices([url], create_labels=False, write=write)
        except UsageError as exc:
            missing[label] = str(exc)
            continue
        if dead:
            missing[label] = dead[0].reason
        elif alive[0].label.label != label:
            other = alive[0].label.label
            missing[label] = f"{url} now holds another device (label {other})"
            if other in known and other not in elsewhere:
                elsewhere[other] = alive[0]
            else:
                alive[0].device.close()
        else:
            found[label] = alive[0]
    # Devices that swapped places (two disks mounted the other way round) are still
    # recognised by their labels (D4), as restore and verify recognise them
    # (readback/core.py): a label not at its own URL but at another known one is there.
    for label, dev in elsewhere.items():
        if label in found:
            dev.device.close()
        else:
            found[label] = dev
            missing.pop(label, None)
    return found, {k: v for k, v in missing.items() if not k.startswith("url:")}

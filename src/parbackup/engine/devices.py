"""Opening the devices of a run: URLs to open devices with labels, failures reported."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from parbackup.devices.base import Device
from parbackup.devices.registry import open_device
from parbackup.errors import DeviceError, UsageError
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


def open_devices(
    urls: list[str], *, create_labels: bool, require_label: bool = True
) -> tuple[list[OpenDevice], list[DeadDevice]]:
    """Open every device; label it at first use when ``create_labels``.

    With ``require_label=False`` (dry runs) an unlabelled device is accepted as it is and
    nothing is written to it.

    A device that fails to open is returned as dead, not raised: the caller decides
    whether the run can go on without it. The same device named twice is a UsageError.
    """
    if len(set(urls)) != len(urls):
        dup = next(u for u in urls if urls.count(u) > 1)
        raise UsageError(f"device named twice: {dup}")
    alive: list[OpenDevice] = []
    dead: list[DeadDevice] = []
    for index, url in enumerate(urls):
        device = open_device(url)
        try:
            device.open()
            if create_labels:
                label = device.ensure_label()
            elif require_label or not device.capabilities.sequential:
                label = device.read_label()
            else:
                label = None  # a dry run never reads a tape (it may be a pipe or a drive)
            if label is None and require_label:
                raise DeviceError(f"{device.url.display}: not a parbackup device (no label)")
            label = label or Label(label="", created="", kind=device.scheme)
            space = device.space()
        except DeviceError as exc:
            device.close()
            dead.append(DeadDevice(index, device.url.display, str(exc)))
            continue
        alive.append(OpenDevice(index, device.url.display, device, label, space))
    _check_unique(alive)
    return alive, dead


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


def label_devices(alive: list[OpenDevice]) -> tuple[list[OpenDevice], list[DeadDevice]]:
    """Write a label on every device that has none yet; those that cannot take it die."""
    kept: list[OpenDevice] = []
    dead: list[DeadDevice] = []
    for dev in alive:
        try:
            dev.label = dev.device.ensure_label()
        except DeviceError as exc:
            dev.device.close()
            dead.append(DeadDevice(dev.index, dev.url, str(exc)))
            continue
        kept.append(dev)
    _check_unique(kept)
    return kept, dead


def close_all(devices: list[OpenDevice]) -> None:
    """Close every device, ignoring errors."""
    for dev in devices:
        with contextlib.suppress(Exception):
            dev.device.close()


def devices_for_labels(
    known: dict[str, str], overrides: list[str]
) -> tuple[dict[str, OpenDevice], dict[str, str]]:
    """Open the devices holding ``known`` labels (label -> URL last seen at).

    ``overrides`` are URLs where devices are now (restore/verify ``--device``); each is
    matched to the catalog by the label written on it, not by its URL (D4). Returns the
    open devices by label and, for labels that could not be reached, the reason.
    """
    found: dict[str, OpenDevice] = {}
    missing: dict[str, str] = {}
    if overrides:
        alive, dead = open_devices(overrides, create_labels=False)
        for dev in alive:
            if dev.label.label in known:
                found[dev.label.label] = dev
            else:
                dev.device.close()
        for d in dead:
            missing.setdefault(f"url:{d.url}", d.reason)
    for label, url in known.items():
        if label in found:
            continue
        try:
            alive, dead = open_devices([url], create_labels=False)
        except UsageError as exc:
            missing[label] = str(exc)
            continue
        if dead:
            missing[label] = dead[0].reason
        elif alive[0].label.label != label:
            missing[label] = f"{url} now holds another device (label {alive[0].label.label})"
            alive[0].device.close()
        else:
            found[label] = alive[0]
    return found, {k: v for k, v in missing.items() if not k.startswith("url:")}

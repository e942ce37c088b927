"""URL scheme -> device class, imported lazily so optional dependencies stay optional.

Nothing registers itself at import time: this table is the whole list.
"""

from __future__ import annotations

import importlib

from parbackup.devices.base import Device
from parbackup.devices.throttle import ThrottledDevice
from parbackup.devices.url import DeviceURL, parse_url
from parbackup.errors import UsageError

# scheme: (module, class, pip extra that provides its dependencies or "")
REGISTRY: dict[str, tuple[str, str, str]] = {
    "file": ("parbackup.devices.local", "DirectoryDevice", ""),
    "memory": ("parbackup.devices.memory", "MemoryDevice", ""),
    "tape": ("parbackup.devices.tape", "TapeDevice", ""),
    "sftp": ("parbackup.devices.sftp", "SFTPDevice", "sftp"),
    "s3": ("parbackup.devices.s3", "S3Device", "s3"),
    # faulty+KIND://...: a fault-injecting wrapper around a KIND device (tests, drills)
    "faulty": ("parbackup.devices.faulty", "FaultyDevice", ""),
}


def device_class(scheme: str) -> type[Device]:
    """The class for a URL scheme, with an install hint when its dependency is missing."""
    if scheme.startswith("faulty+"):
        device_class(scheme.removeprefix("faulty+"))  # the wrapped kind must exist
        scheme = "faulty"
    try:
        module_name, class_name, extra = REGISTRY[scheme]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UsageError(f"unknown device kind {scheme!r} (known: {known})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'parbackup[{extra}]'" if extra else "reinstall parbackup"
        raise UsageError(
            f"device kind {scheme!r} needs a package that is not installed "
            f"({exc.name}); install it with: {hint}"
        ) from exc
    return getattr(module, class_name)


def open_device(url: str | DeviceURL) -> Device:
    """Build (not yet open) the device a URL names; ``?limit=RATE`` wraps it in a throttle."""
    parsed = parse_url(url) if isinstance(url, str) else url
    device = device_class(parsed.scheme)(parsed)
    if "limit" in parsed.params:
        return ThrottledDevice(device)
    return device

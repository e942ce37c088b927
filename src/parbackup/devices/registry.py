"""URL scheme -> device class, imported lazily so optional dependencies stay optional.

Nothing registers itself at import time: this table is the whole list. ``open_device``
also refuses configuration mistakes before anything is opened: an option no kind or
wrapper understands, an option value that is not a number, a URL its kind rejects.
"""

from __future__ import annotations

from parbackup.devices.base import COMMON_OPTIONS, Device
from parbackup.devices.throttle import ThrottledDevice
from parbackup.devices.url import DeviceURL, parse_url
from parbackup.errors import UsageError
from parbackup.kinds import load_kind

FAULTY = "faulty+"

# scheme: (module, class, pip extra that provides its dependencies or "")
REGISTRY: dict[str, tuple[str, str, str]] = {
    "file": ("parbackup.devices.local", "DirectoryDevice", ""),
    "memory": ("parbackup.devices.memory", "MemoryDevice", ""),
    "tape": ("parbackup.devices.tape", "TapeDevice", ""),
    "sftp": ("parbackup.devices.sftp", "SFTPDevice", "sftp"),
    "s3": ("parbackup.devices.s3", "S3Device", "s3"),
    # decoded://SPEC: a lost device of a parity set, decoded on demand (readback/recover.py)
    "decoded": ("parbackup.devices.decoded", "DecodedDevice", "parity"),
    # shared://SPEC: a surviving device read once for its reader and a decoded stand-in
    "shared": ("parbackup.devices.shared", "SharedDevice", ""),
    # faulty+KIND://...: a fault-injecting wrapper around a KIND device (tests, drills)
    "faulty": ("parbackup.devices.testing.faulty", "FaultyDevice", ""),
}


def device_class(scheme: str) -> type[Device]:
    """The class for a URL scheme, with an install hint when its dependency is missing."""
    if scheme.startswith(FAULTY):
        device_class(scheme.removeprefix(FAULTY))  # the wrapped kind must exist
        scheme = "faulty"
    return load_kind(REGISTRY, scheme, "device kind")


def known_options(scheme: str) -> frozenset[str]:
    """Every URL option a device of ``scheme`` understands, wrappers' included."""
    known = COMMON_OPTIONS | ThrottledDevice.options | device_class(scheme).options
    if scheme.startswith(FAULTY):
        known |= device_class(scheme.removeprefix(FAULTY)).options
    return known


def check_options(
    url: DeviceURL, known: frozenset[str] | None = None, what: str = "device"
) -> None:
    """UsageError for an option no part of the device understands (``?limt=1K``).

    Remote sources pass the options they understand (``known``) and ``what="source"``.
    """
    known = known_options(url.scheme) if known is None else known
    unknown = sorted(set(url.params) - known)
    if unknown:
        raise UsageError(
            f"{url.display}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} for a {url.scheme} {what} "
            f"(known: {', '.join(sorted(known))})"
        )


def open_device(url: str | DeviceURL) -> Device:
    """Build (not yet open) the device a URL names; ``?limit=RATE`` wraps it in a throttle.

    Raises UsageError for a configuration mistake the URL shows, so nothing is written.
    """
    parsed = parse_url(url) if isinstance(url, str) else url
    cls = device_class(parsed.scheme)
    check_options(parsed)
    cls.check_url(parsed)
    try:
        device = cls(parsed)
        if "limit" in parsed.params and not parsed.scheme.startswith(FAULTY):
            return ThrottledDevice(device)  # (a faulty device's inner one is throttled)
    except ValueError as exc:
        raise UsageError(f"{parsed.display}: bad option value ({exc})") from exc
    return device

"""Error hierarchy of parbackup; every error carries the exit code the CLI returns.

    ParbackupError                 exit 1   anything parbackup raises on purpose
    ├── UsageError                 exit 2   bad arguments, bad URL, unknown option value
    ├── SourceError                exit 1   a source is missing or cannot be walked
    ├── PlanError                  exit 1   the data cannot be placed (does not fit, no device)
    ├── CatalogError               exit 1   catalog missing, locked, unreadable, unknown set
    ├── FormatError                exit 1   a record or volume on a device is malformed
    │   └── ChecksumError          exit 1   a payload does not match its checksum
    │       └── TamperedError      exit 1   an encrypted record fails authentication
    ├── KeyUnlockError             exit 1   no key, or the passphrase opens none of its slots
    ├── DeviceError                exit 1   a device operation failed
    │   ├── TransientDeviceError   exit 1   worth retrying (dropped connection, throttling)
    │   ├── DeviceFullError        exit 1   no space left (ENOSPC, capacity reached)
    │   └── DeviceMissingError     exit 1   the device or an object on it does not exist
    ├── RestoreError               exit 1   restore cannot proceed (target conflicts, unsafe path)
    ├── ClusterError               exit 1   the Dask cluster (--cluster) cannot be used
    └── BackupFailedError          exit 1   no device survived; nothing was recorded as backed up

Foreign exceptions (OSError, paramiko, botocore) are converted at the device or source
boundary with ``raise DeviceError(...) from exc`` so callers only handle these classes.
A device error is *transient* when retrying may help and *permanent* otherwise; the
engine retries transient errors with backoff and fails the device over on permanent ones.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WARNINGS = 3


class ParbackupError(Exception):
    """Base of every error parbackup raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(ParbackupError):
    """The user asked for something malformed (bad URL, bad option value)."""

    exit_code = EXIT_USAGE


class SourceError(ParbackupError):
    """A source to back up does not exist or cannot be walked."""


class PlanError(ParbackupError):
    """The files cannot be placed on the devices (too little space, no devices)."""


class CatalogError(ParbackupError):
    """The catalog cannot be opened, is locked, or lacks what was asked for."""


class FormatError(ParbackupError):
    """Bytes read from a device are not a valid record or volume."""


class ChecksumError(FormatError):
    """A record's payload does not match the checksum in its header."""


class TamperedError(ChecksumError):
    """An encrypted record or header fails authentication: changed, swapped or replayed."""


class KeyUnlockError(ParbackupError):
    """The encryption key is missing, or the passphrase given opens none of its slots."""


class DeviceError(ParbackupError):
    """A device operation failed permanently unless a subclass says otherwise."""

    transient = False


class TransientDeviceError(DeviceError):
    """A device operation failed in a way that a retry may cure."""

    transient = True


class DeviceFullError(DeviceError):
    """The device has no room left (ENOSPC, EDQUOT, or its configured capacity)."""


class DeviceMissingError(DeviceError):
    """The device, or an object asked for on it, does not exist."""


class RestoreError(ParbackupError):
    """A restore cannot proceed safely (target conflicts, paths escaping the target)."""


class ClusterError(ParbackupError):
    """The Dask cluster cannot be reached or cannot run a worker (--cluster)."""


class BackupFailedError(ParbackupError):
    """Every device failed; the set is recorded as failed."""


_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_MISSING_ERRNOS = {errno.ENOENT, errno.ENOTDIR}


def device_error_from_os(exc: OSError, what: str) -> DeviceError:
    """Map an OSError raised while touching a device onto the device error classes."""
    detail = f"{what}: {exc.strerror or exc}"
    if exc.errno in _FULL_ERRNOS:
        return DeviceFullError(detail)
    if exc.errno in _MISSING_ERRNOS:
        return DeviceMissingError(detail)
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientDeviceError(detail)
    return DeviceError(detail)

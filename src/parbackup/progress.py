"""Progress events the engine emits; the CLI renders them, tests can record them.

Events are delivered on the engine's own thread (never from device workers), in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Started:
    """Work begins: ``total_bytes`` over ``files`` files on the named devices.

    ``device_bytes`` (when known) is how many bytes each device is expected to move.
    """

    operation: str
    files: int
    total_bytes: int
    devices: tuple[str, ...]
    device_bytes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeviceBytes:
    """``nbytes`` more payload bytes went through device ``device`` (its URL)."""

    device: str
    nbytes: int


@dataclass(frozen=True)
class FileDone:
    """One more file (or directory, or link) is finished."""

    path: str


@dataclass(frozen=True)
class DeviceFailed:
    """A device was given up; ``redirected`` bytes moved to the survivors."""

    device: str
    reason: str
    redirected: int


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the run."""

    message: str


Event = Started | DeviceBytes | FileDone | DeviceFailed | Notice
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: drop every event."""

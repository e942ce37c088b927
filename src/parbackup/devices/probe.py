"""A short timed write that tells how fast a device takes data (``--balance time``
with no speed given or learnt: engine/speeds.py; run by the device's mover)."""

from __future__ import annotations

import contextlib
import time

from parbackup.devices.base import Device
from parbackup.errors import DeviceError


def probe_speed(device: Device, *, limit: int, seconds: float) -> float:
    """Write up to ``limit`` bytes (or for ``seconds``) to a scratch object; bytes/s.

    The commit is timed too, so a device that buffers writes and pays at commit is not
    mistaken for a fast one. The scratch object is always deleted.
    """
    name = ".parbackup-speed-probe"
    block = bytes(256 << 10)
    written = 0
    started = time.monotonic()
    writer = device.replace(name)
    try:
        while written < limit:
            writer.write(block)
            written += len(block)
            if time.monotonic() - started >= seconds:
                break
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        elapsed = time.monotonic() - started
        with contextlib.suppress(DeviceError):
            device.delete(name)
    return max(1.0, written / max(elapsed, 1e-6))

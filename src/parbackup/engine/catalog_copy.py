"""The catalog copy put on every surviving device at the end of a backup (X2).

All devices are written at once; one that stops taking the copy for ``timeout`` seconds
is left behind with a notice: the set is already recorded, and a hung device must not
hold the run (or the process exit) up.
"""

from __future__ import annotations

import os
import threading
import time

from parbackup import scratch
from parbackup.catalog import Catalog
from parbackup.crypto.codec import CodecSpec
from parbackup.crypto.keys import device_key_name
from parbackup.crypto.sealedfile import seal_file
from parbackup.engine.devices import OpenDevice
from parbackup.engine.keystore import catalog_key
from parbackup.engine.putfile import put_file
from parbackup.progress import EventSink, Notice

CATALOG_COPY = "catalog/catalog.sqlite"
SEALED_CATALOG_COPY = "catalog/catalog.sqlite.sealed"
"""The copy an encrypted catalog puts on devices instead (crypto/sealedfile.py)."""


def catalog_copies(
    catalog: Catalog, tmp: str, codec: CodecSpec | None, key_file: bytes
) -> list[tuple[str, str]]:
    """(name on the device, local file) of what a backup puts on every device: the
    catalog copy, sealed when the set is encrypted, and then the key file beside it (so
    rebuild-catalog needs only the devices and a passphrase)."""
    path = os.path.join(tmp, "catalog.sqlite")
    catalog.copy_to(path)
    if codec is None or not codec.encrypted:
        return [(CATALOG_COPY, path)]
    sealed = path + ".sealed"
    with open(path, "rb") as src, open(sealed, "wb") as dst:
        seal_file(src, dst, codec.master, codec.key_id)
    os.unlink(path)
    keys = os.path.join(tmp, "key.json")
    now = catalog_key(catalog)  # as it is now, not as the run loaded it: a passphrase
    if now is not None and now.key_id == codec.key_id:  # removed since is not put back
        key_file = now.to_json()
    with open(keys, "wb") as fh:
        fh.write(key_file)
    return [(SEALED_CATALOG_COPY, sealed), (device_key_name(codec.key_id), keys)]


def copy_catalog(
    catalog: Catalog, devices: list[OpenDevice], on_event: EventSink, timeout: float = 60.0
) -> None:
    """Put a copy of the catalog on every surviving device at once (X2).

    A device that stops taking the copy for ``timeout`` seconds is left behind with a
    notice: the set is already recorded, and a hung device must not hold the run up.
    An encrypted catalog (one with a key) is not copied in the clear: the next backup,
    which has the key, puts its sealed copy on the devices.
    """
    if catalog_key(catalog) is not None:
        on_event(Notice("catalog copies not refreshed: the catalog is encrypted"))
        return
    with scratch.directory() as tmp:
        path = os.path.join(tmp, "catalog.sqlite")
        catalog.copy_to(path)
        copies = [_CatalogCopy(dev, path) for dev in devices]
        for c in copies:
            c.start()
        while any(c.is_alive() for c in copies):
            for c in copies:
                c.join(0.05)
            now = time.monotonic()
            for c in copies:
                if c.is_alive() and not c.given_up and now - c.heartbeat > timeout:
                    c.given_up = True
                    c.error = f"no progress for {timeout:g} seconds"
            if all(c.given_up or not c.is_alive() for c in copies):
                break
        for c in copies:
            if c.error:
                on_event(Notice(f"could not copy the catalog to {c.dev.url}: {c.error}"))


class _CatalogCopy(threading.Thread):
    """Copies the catalog file to one device; ``heartbeat`` moves with every chunk."""

    def __init__(self, dev: OpenDevice, path: str) -> None:
        super().__init__(name=f"catalog-copy-{dev.index}", daemon=True)
        self.dev, self.path = dev, path
        self.heartbeat = time.monotonic()
        self.error = ""
        self.given_up = False

    def run(self) -> None:
        try:
            put_file(self.dev.device, CATALOG_COPY, self.path, self.beat, (0, b""))
        except Exception as exc:
            self.error = self.error or str(exc)

    def beat(self) -> None:
        """The device took the last chunk."""
        self.heartbeat = time.monotonic()

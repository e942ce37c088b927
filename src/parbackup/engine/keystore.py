"""Where a catalog keeps its encryption key file: beside a catalog file, inside a server.

A SQLite catalog keeps it in ``<catalog>.key`` beside the file (mode 0600). A catalog on
a PostgreSQL server has no file beside it, and the hosts sharing it must all find the
key: the key file's JSON is kept in the catalog's ``meta`` table under ``key_file``.
That is safe for the same reason a copy lies on every device: the master key in it is
wrapped by passphrases (crypto/keys.py), so reading the table opens nothing without one.
Either way a copy goes to every device of an encrypted set (``keys/<key id>.json``):
a backup puts it there, and ``refresh_key_copies`` replaces those copies at once when a
passphrase is added or removed. A change is made under the catalog's run lock
(``key_change_lock``): a backup puts the key file it loaded at its start on every device
at its end, so a change made while it runs would be undone there.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from parbackup.catalog import Catalog, is_catalog_url, open_catalog
from parbackup.catalog.runlock import RunLock
from parbackup.crypto.keys import KeyFile, device_key_name, key_path
from parbackup.engine.devices import close_all, devices_for_labels
from parbackup.errors import DeviceError

KEY_META = "key_file"
"""The ``meta`` key under which a server catalog keeps its key file (JSON text)."""


def key_place(target: str) -> str:
    """Where the key of the catalog ``target`` names lives, for messages."""
    if is_catalog_url(target):
        return f"the catalog's meta table ({KEY_META})"
    return str(key_path(target))


@contextlib.contextmanager
def key_change_lock(target: str) -> Iterator[None]:
    """Hold the run lock of the catalog ``target`` names while its key file is changed:
    CatalogError at once while a backup (or another key change, a forget, a prune)
    holds it. Without it a backup running meanwhile put the old key file back on every
    device at its end (a removed passphrase opened them again), and two changes at once
    lost one. Nothing to lock where no catalog (nor its directory) exists yet."""
    if is_catalog_url(target):
        with open_catalog(target, create=False) as catalog:
            catalog.run_lock.acquire()
            try:
                yield
            finally:
                catalog.run_lock.release()
        return
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        yield
        return
    lock = RunLock(target)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def catalog_key(catalog: Catalog) -> KeyFile | None:
    """The key file of an open catalog, or None when it has none."""
    if not is_catalog_url(catalog.path):
        return KeyFile.load(key_path(catalog.path))
    text = catalog.meta(KEY_META)
    return None if text is None else KeyFile.from_json(text.encode(), key_place(catalog.path))


def save_catalog_key(catalog: Catalog, keyfile: KeyFile) -> None:
    """Keep ``keyfile`` as the open catalog's key (replacing the one it had)."""
    if not is_catalog_url(catalog.path):
        path = key_path(catalog.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keyfile.save(path)
    else:
        catalog.set_meta(KEY_META, keyfile.to_json().decode())


def key_at(target: str, *, create: bool = False) -> KeyFile | None:
    """The key file of the catalog ``target`` names (a file path or a server URL), or
    None. A catalog file is not opened (its key lies beside it); a server catalog is,
    and ``create`` makes it when it does not exist yet (a first backup)."""
    if not is_catalog_url(target):
        return KeyFile.load(key_path(target))
    with open_catalog(target, create=create) as catalog:
        return catalog_key(catalog)


def save_key_at(target: str, keyfile: KeyFile) -> None:
    """Keep ``keyfile`` as the key of the catalog ``target`` names."""
    if not is_catalog_url(target):
        path = key_path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        keyfile.save(path)
        return
    with open_catalog(target, create=True) as catalog:
        save_catalog_key(catalog, keyfile)


@dataclass
class KeyCopies:
    """What refreshing the key file's copies on the devices did, by device URL."""

    refreshed: list[str] = field(default_factory=list)
    """Devices whose ``keys/<key id>.json`` now is the catalog's key file."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """Device (URL, or label when no URL is known) -> why its copy was not refreshed."""

    def to_json(self) -> dict:
        return {
            "refreshed": sorted(self.refreshed),
            "not_refreshed": [
                {"device": d, "error": why} for d, why in sorted(self.unreachable.items())
            ],
        }


def refresh_key_copies(catalog: Catalog, keyfile: KeyFile) -> KeyCopies:
    """Put ``keyfile`` in place of the copy every device the catalog knows holds
    (``keys/<key id>.json``), so a passphrase removed from the catalog's key no longer
    opens the devices' copies, and one added opens them now rather than after the next
    backup. Devices without a copy (only sets from before the key) are left alone. A
    device that cannot be reached or written, and a tape (only its next backup rewrites
    it), is named in ``unreachable``."""
    out = KeyCopies()
    name = device_key_name(keyfile.key_id)
    tapes = catalog.tape_labels()
    known = catalog.device_urls()
    for label, url in sorted(tapes.items()):
        out.unreachable[url or label] = "a tape: its copy is rewritten by its next backup"
    disks = {label: url for label, url in known.items() if label not in tapes}
    opened, missing = devices_for_labels(disks, [], write=True)
    for label, why in missing.items():
        out.unreachable[disks.get(label) or label] = why
    try:
        for dev in opened.values():
            try:
                if not any(o.name == name for o in dev.device.list("keys/")):
                    continue
                dev.device.put_stream(name, io.BytesIO(keyfile.to_json()))
            except DeviceError as exc:
                out.unreachable[dev.url] = str(exc)
                continue
            out.refreshed.append(dev.url)
    finally:
        close_all(list(opened.values()))
    return out

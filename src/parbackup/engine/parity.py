"""Parity for a backup set (``backup --parity m``, REQUIREMENTS K1).

Layout: dedicated parity devices (as Amanda's RAIT): of the n ``--device`` URLs, the
last m hold parity and the planner spreads the data over the first n-m. Each data
device is one column (redundancy/layout.py); one parity volume is written on each
parity device, one row at a time. The catalog remembers the stripe (``set_parity``)
only once the parity volumes are committed; the parity volumes describe themselves too.

Two ways to write them, the same rows either way:

- **while writing** (``ParityStream``, the usual way with local movers): a parity
  collector (engine/paritystream.py, a thread) takes every mover's volume bytes as
  they are written (engine/paritytee.py) and writes each row once every column has
  passed it. Time
  balance and redirected work only make columns of unequal length (zero padding).
- **after the data** (``add_parity``): every data volume is read back and the rows
  computed then (redundancy/stripe.py). This is the fallback whenever the streamed
  rows cannot be trusted whole: a data device failed during the run (the set's columns
  are then the survivors only, and its k is smaller), a mover lost its link to the
  parity collector, the movers run on other hosts (``--cluster``), or ISA-L is missing.
  The set then still gets all m parities over what was committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from parbackup import scratch
from parbackup.catalog import Catalog
from parbackup.crypto.codec import CodecSpec
from parbackup.devices.base import Device
from parbackup.devices.url import parse_url
from parbackup.engine.catalog_copy import catalog_copies
from parbackup.engine.devices import OpenDevice, close_all, devices_for_labels, open_devices
from parbackup.engine.paritystream import (
    Abandon,
    Begin,
    Close,
    Collector,
    Failed,
    Listening,
    Opened,
    ParitySpec,
    Put,
    Stored,
    Written,
    window_for,
)
from parbackup.engine.paritytee import ParityLink, slots_for
from parbackup.errors import DeviceError, FormatError, UsageError
from parbackup.redundancy.codec import CODEC, check_params
from parbackup.redundancy.isal import Updater
from parbackup.redundancy.layout import UNIT, Column, row_count
from parbackup.redundancy.stripe import write_parity
from parbackup.redundancy.volume import WRITTEN_VERSION
from parbackup.workers import Executor, LocalExecutor

log = logging.getLogger(__name__)


def copy_catalog(
    catalog: Catalog, devices: Sequence[Device], codec: CodecSpec | None, key_file: bytes
) -> None:
    """A copy of the catalog (now knowing the set's parity) on each parity device (X2):
    sealed, with the key file beside it, when the set is encrypted."""
    with scratch.directory() as tmp:
        for name, path in catalog_copies(catalog, tmp, codec, key_file):
            for dev in devices:
                with open(path, "rb") as fh:
                    dev.put_stream(name, fh)


def split_devices(urls: Sequence[str], parity: int) -> tuple[list[str], list[str]]:
    """The data and the parity device URLs of a run with ``--parity parity``."""
    if parity <= 0:
        return list(urls), []
    check_params(len(urls) - parity, parity)
    return list(urls[:-parity]), list(urls[-parity:])


def column_of(device: OpenDevice, set_hex: str) -> Column:
    """A data device's column: its volumes of the set in sequence order."""
    vols = sorted(
        (o.name, o.size) for o in device.device.list(f"sets/{set_hex}/") if o.name.endswith(".pbv")
    )
    return Column(device.label.label, tuple(vols))


def add_parity(
    catalog: Catalog,
    set_hex: str,
    data: Sequence[tuple[str, str]],
    parity_urls: Sequence[str],
    *,
    unit: int = UNIT,
    codec: CodecSpec | None = None,
    key_file: bytes = b"",
) -> dict:
    """Write the set's parity volumes; the ``parity`` part of the backup report.

    ``data``: (label, url) of every data device that holds the set. Never raises for a
    device problem: the report then says the set has no redundancy, and why.
    """
    m = len(parity_urls)
    started = time.monotonic()
    report: dict = {"m": m, "redundancy": 0, "devices": []}
    opened: dict[str, OpenDevice] = {}
    alive: list[OpenDevice] = []
    try:
        opened, missing = devices_for_labels(dict(data), [], write=False)
        if missing:
            raise DeviceError("; ".join(f"{k}: {v}" for k, v in missing.items()))
        columns = [column_of(opened[label], set_hex) for label, _url in data]
        alive, dead = open_devices(list(parity_urls), create_labels=True, write=True)
        if dead:
            raise DeviceError("; ".join(f"{d.url}: {d.reason}" for d in dead))
        labels = [d.label.label for d in alive]
        if set(labels) & {c.label for c in columns}:
            raise UsageError("a parity device is also a data device of the set")
        created_ns = time.time_ns()
        written = write_parity(
            bytes.fromhex(set_hex),
            [(c, opened[c.label].device) for c in columns],
            [(d.label.label, d.device) for d in alive],
            unit=unit,
            created_ns=created_ns,
        )
        for d in alive:
            catalog.remember_device(d.label.label, d.url, d.device.scheme)
        info = {
            "codec": CODEC,
            "k": len(columns),
            "m": m,
            "unit": unit,
            "version": WRITTEN_VERSION,
            "columns": [c.label for c in columns],
            "volumes": [c.to_json() for c in columns],
            "rows": row_count(columns, unit),
            "created_ns": created_ns,
            "parity": [
                {"label": label, "url": d.url, "name": name, "size": size}
                for d, (label, name, size) in zip(alive, written, strict=True)
            ],
        }
        catalog.set_parity(set_hex, info)
        copy_catalog(catalog, [d.device for d in alive], codec, key_file)
        report.update(
            redundancy=m,
            k=len(columns),
            devices=[{"url": d.url, "label": d.label.label} for d in alive],
            bytes=sum(size for _l, _n, size in written),
        )
    except (DeviceError, FormatError, UsageError) as exc:
        log.warning("parity not written: %s", exc)
        report["error"] = f"parity not written: {exc}"
    finally:
        close_all(list(opened.values()) + alive)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


class ParityStream:
    """The controller's side of parity while writing (see the module docstring)."""

    def __init__(self, worker: Collector, urls: Sequence[str], timeout: float, unit: int) -> None:
        self.worker, self.urls, self.timeout, self.unit = worker, list(urls), timeout, unit
        self.columns: list[str] = []
        self.labels: list[str] = []
        self.error = ""
        self.started = time.monotonic()
        self.created_ns = 0
        self.info: dict | None = None
        """The stripe recorded in the catalog, once ``close`` did."""
        self.copied = False

    @classmethod
    def start(
        cls,
        urls: Sequence[str],
        executor: Executor | None,
        timeout: float,
        unit: int = UNIT,
        *,
        columns: int = 0,
    ) -> ParityStream | None:
        """Start the parity collector (it opens and labels the parity devices, and makes
        the codec's fragment headers for ``columns`` data devices, while the sources are
        scanned); None where parity must be written after the data: movers on other
        hosts (no shared memory with them) or no ISA-L."""
        if not urls or not isinstance(executor or LocalExecutor(), LocalExecutor):
            return None
        if Updater.load(1, 1, unit) is None:
            return None
        spec = ParitySpec(tuple(urls), unit, window_for(unit), timeout=timeout, columns=columns)
        worker = Collector(spec)
        # the catalog and the report get each URL as the data devices' are recorded:
        # absolute, without its secrets (the collector alone opens the URLs as given)
        return cls(worker, [parse_url(u).display for u in urls], timeout, unit)

    def _answer(self, want: type, timeout: float) -> object:
        channel = self.worker.channel
        try:
            if not channel.poll(timeout):
                return Failed(f"the parity collector gave no answer in {timeout:g} s")
            msg = channel.recv()
        except (EOFError, OSError):
            return Failed("the parity collector ended unexpectedly")
        return msg if isinstance(msg, (want, Failed)) else Failed(f"unexpected {msg!r}")

    def begin(self, set_id: bytes, columns: Sequence[str], catalog: Catalog) -> list[ParityLink]:
        """Tell the collector the set and its columns (the data devices' labels, in order);
        a link for each data mover, or none when the parity is to be written after the
        data (``error`` says why)."""
        self.columns = list(columns)
        opened = self._answer(Opened, self.timeout)
        if isinstance(opened, Opened) and set(opened.labels) & set(columns):
            # a copy of a data device (same label): recording its URL for that label would
            # send every later read of the data device to the copy
            opened = Failed("a parity device is also a data device of the set")
        if isinstance(opened, Opened):
            self.labels = list(opened.labels)
            for label, url, scheme in zip(opened.labels, self.urls, opened.schemes, strict=True):
                catalog.remember_device(label, url, scheme)  # a killed run's leftovers: prune
            self.created_ns = time.time_ns()
            self.worker.send(Begin(set_id, tuple(columns), self.created_ns))
            listening = self._answer(Listening, self.timeout)
            if isinstance(listening, Listening):
                return [
                    ParityLink(
                        listening.address, listening.token, j, self.unit, slots_for(self.unit)
                    )
                    for j in range(len(columns))
                ]
            opened = listening
        self.error = opened.error  # type: ignore[attr-defined]
        self.abandon()
        return []

    def close(self, catalog: Catalog, set_hex: str, data: Sequence[tuple[str, str]]) -> bool:
        """Close the streamed parity and record it in the catalog (once); False (``error``
        says why) when it cannot stand for the set: the caller then writes it after the
        data. Called before the set's catalog copy is made (``_Backup.finish``), so the
        one copy every device gets, data and parity alike, holds the stripe."""
        if self.info is not None:
            return True
        if self.error:
            return False
        if [label for label, _url in data] != self.columns:
            self.error = "a data device failed during the backup"
            self.abandon()
            return False
        self.worker.send(Close())
        log.debug("parity: %.3f closing the streamed volumes", time.monotonic() - self.started)
        done = self._answer(Written, max(self.timeout, 60.0))
        log.debug("parity: %.3f streamed volumes written", time.monotonic() - self.started)
        if not isinstance(done, Written):
            self.error = done.error  # type: ignore[attr-defined]
            self.abandon()
            return False
        m = len(self.urls)
        info = {
            "codec": CODEC,
            "k": len(done.columns),
            "m": m,
            "unit": self.unit,
            "version": WRITTEN_VERSION,
            "columns": [c.label for c in done.columns],
            "volumes": [c.to_json() for c in done.columns],
            "rows": done.rows,
            "created_ns": self.created_ns,
            "parity": [
                {"label": label, "url": url, "name": name, "size": size}
                for (label, name, size), url in zip(done.volumes, self.urls, strict=True)
            ],
        }
        catalog.set_parity(set_hex, info)
        self.info = info
        return True

    @property
    def closed(self) -> bool:
        """The streamed parity is written and recorded (``close``)."""
        return self.info is not None

    def put_copies(self, files: Sequence[tuple[str, str]]) -> None:
        """Start putting the catalog copy's files ((name, local path)) on every parity
        device; ``copies_stored`` waits for them (the data devices take theirs meanwhile)."""
        self.worker.send(Put(tuple(files)))

    def copies_stored(self) -> None:
        """Wait for ``put_copies``; a copy not put is a warning (the parity is recorded)."""
        stored = self._answer(Stored, max(self.timeout, 60.0))
        errors = stored.errors if isinstance(stored, Stored) else (stored.error,)  # type: ignore[attr-defined]
        for error in errors:  # the parity is written and recorded: only the copy failed
            log.warning("catalog copy not put on a parity device: %s", error)
        self.copied = True

    def finish(
        self,
        catalog: Catalog,
        set_hex: str,
        data: Sequence[tuple[str, str]],
        codec: CodecSpec | None,
        key_file: bytes,
    ) -> dict | None:
        """Close and record the streamed parity unless ``close`` did already, put the
        catalog copy on the parity devices unless done with the data devices' (``put_copies``);
        the report's ``parity``, or None (``error`` says why) when it cannot stand for
        the set: the caller then writes it after the data."""
        if not self.close(catalog, set_hex, data):
            return None
        if not self.copied:
            with scratch.directory() as tmp:
                self.put_copies(catalog_copies(catalog, tmp, codec, key_file))
                self.copies_stored()
        self.stop()
        log.debug("parity: %.3f recorded, catalog copied", time.monotonic() - self.started)
        assert self.info is not None
        return {
            "m": self.info["m"],
            "redundancy": self.info["m"],
            "k": self.info["k"],
            "devices": [
                {"url": url, "label": label}
                for url, label in zip(self.urls, self.labels, strict=True)
            ],
            "bytes": sum(p["size"] for p in self.info["parity"]),
            "written": "while writing",
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def stop(self) -> None:
        """Let the collector end (it has nothing more to do); never raises."""
        self.worker.send(Abandon())
        if not self.worker.join(min(self.timeout, 10.0)):
            self.worker.kill()

    def abandon(self) -> None:
        """Give the streamed parity up: the worker aborts its volumes and ends; waited
        for, as the parity devices are opened again next (a tape by one at a time)."""
        self.stop()


def finish_parity(
    stream: ParityStream | None,
    catalog: Catalog,
    set_hex: str,
    data: Sequence[tuple[str, str]],
    parity_urls: Sequence[str],
    *,
    codec: CodecSpec | None = None,
    key_file: bytes = b"",
) -> dict:
    """The set's parity, streamed if that worked, else written after the data now; the
    ``parity`` part of the backup report."""
    if stream is not None:
        report = stream.finish(catalog, set_hex, data, codec, key_file)
        if report is not None:
            return report
        log.info("parity is written after the data: %s", stream.error)
    report = add_parity(catalog, set_hex, data, parity_urls, codec=codec, key_file=key_file)
    report["written"] = "after the data"
    if stream is not None and stream.error:
        report["why_after"] = stream.error
    return report

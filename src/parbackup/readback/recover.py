"""Reading around missing devices with parity (REQUIREMENTS K1, K2).

For a set written with ``--parity m`` (engine/parity.py), ``find_columns`` tells which
data columns are missing: the device cannot be reached, or one of the column's volumes
is gone or has another size than when the parity was written. ``rebuild`` decodes the
missing columns row by row (redundancy/stripe.py) onto a device per column, each
labelled as the lost one, so readers find it by its label like the original (D4).

Restore and verify (``recovered``) rebuild into a temporary directory and read from it;
``repair`` rebuilds onto a replacement device. Memory stays one row (k+m units);
disk use is the size of the missing columns' volumes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from parbackup import scratch
from parbackup.catalog import Catalog
from parbackup.devices.base import Device
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.devices.url import parse_url
from parbackup.errors import DeviceError, FormatError, ParbackupError, UsageError
from parbackup.model import Label

if TYPE_CHECKING:
    from parbackup.redundancy.layout import Column
    from parbackup.redundancy.stripe import ColumnWriter
    from parbackup.redundancy.volume import ParityHeader

# redundancy/ (pyeclib, the stripe's readers and writers) is imported by the functions
# that read parity: a restore of a set without parity never loads it (serial start)


@dataclass
class Recovery:
    """What reading around missing devices found and did."""

    parity: bool = False
    missing: dict[str, str] = field(default_factory=dict)
    """label -> why the device (data or parity) is missing or unusable."""
    urls: list[str] = field(default_factory=list)
    """Devices holding rebuilt columns: read them in place of the missing ones."""
    lost_units: dict[str, int] = field(default_factory=dict)
    unrecoverable: list[int] = field(default_factory=list)
    error: str = ""
    where: dict[str, str] = field(default_factory=dict)
    """label -> URL of every device of the set that was found."""


class _Devices:
    """Devices opened read-only by label: ``--device`` URLs first, then the catalog's."""

    def __init__(self, known: dict[str, str], overrides: Sequence[str]) -> None:
        self.known, self.open_ = known, {}
        self.by_label: dict[str, Device] = {}
        self.url_of: dict[str, str] = {}
        self.why: dict[str, str] = {}
        for url in overrides:
            dev = self._open(url)
            if isinstance(dev, Device):
                label = _label(dev)
                if label and label not in self.by_label:
                    self.by_label[label] = dev
                    self.url_of[label] = url
                    continue
                _close(dev)

    @staticmethod
    def _open(url: str) -> Device | str:
        try:
            dev = RetryingDevice(open_device(url))
            dev.open(write=False)
            return dev
        except (ParbackupError, OSError) as exc:
            return str(exc)

    def get(self, label: str) -> Device | None:
        if label in self.by_label:
            return self.by_label[label]
        if label in self.why:
            return None
        url = self.known.get(label)
        dev = self._open(url) if url else "not known to the catalog"
        if isinstance(dev, Device) and _label(dev) != label:
            _close(dev)
            dev = f"{url} holds another device now"
        if isinstance(dev, str):
            self.why[label] = dev
            return None
        self.by_label[label] = dev
        self.url_of[label] = url
        return dev

    def close(self) -> None:
        for dev in self.by_label.values():
            _close(dev)


def _label(dev: Device) -> str:
    try:
        found = dev.read_label()
    except (ParbackupError, OSError):
        return ""
    return found.label if found else ""


def _close(dev: Device) -> None:
    with contextlib.suppress(Exception):
        dev.close()


def _column_ok(dev: Device, col: Column, set_hex: str) -> str:
    """'' if every volume of the column is on ``dev`` with its size; else why not."""
    try:
        sizes = {o.name: o.size for o in dev.list(f"sets/{set_hex}/")}
    except (ParbackupError, OSError) as exc:
        return str(exc)
    for name, size in col.volumes:
        if name not in sizes:
            return f"{name} is missing"
        if sizes[name] != size:
            return f"{name} has {sizes[name]} bytes, not {size}"
    return ""


def rebuild(
    catalog: Catalog,
    set_hex: str,
    known: dict[str, str],
    overrides: Sequence[str],
    target_for: Callable[[str], Device] | None,
    *,
    only: Sequence[str] = (),
    suspects: Sequence[str] = (),
    survey: bool = False,
    copy_sequential: bool = False,
) -> Recovery:
    """Find the set's missing columns (data or parity) and, with ``target_for`` (label
    -> device to write onto), rebuild them.

    ``only`` limits which labels are rebuilt; ``suspects`` are data columns that are
    present but hold damaged bytes: they are read (their good units help), checked
    unit by unit against the row digests, and rebuilt too. Without ``target_for``
    nothing is written; the rows are still read and checked when a column is missing,
    unless ``survey`` (then only the devices and the volumes' sizes are looked at).
    With ``copy_sequential``, a present data column on a device read front to back only
    (a tape) is written to ``target_for`` too, as the rows go by, and listed in
    ``urls`` like a rebuilt one: a restore then reads it there, and the tape once.
    """
    rec = Recovery()
    info = catalog.parity(set_hex)
    if not info:
        return rec
    from parbackup.redundancy.stripe import (
        HEADER_CHUNK,
        ColumnWriter,
        CopyWriter,
        ParityReader,
        open_parity,
        walk_rows,
    )
    from parbackup.redundancy.volume import end_of

    rec.parity = True
    devices = _Devices(known, overrides)
    streams: list = []
    writers: list = []
    targets: dict[str, ColumnWriter] = {}
    parity_targets: dict[int, object] = {}
    try:
        readers: dict[int, ParityReader] = {}
        header: ParityHeader | None = None
        parity_lost: list[int] = []
        for i, p in enumerate(info["parity"]):
            dev = devices.get(p["label"])
            why = devices.why.get(p["label"], "unreachable") if dev is None else ""
            if dev is not None:
                try:
                    # a survey wants the header only: no 8 MiB of read-ahead
                    chunk = HEADER_CHUNK if survey else 8 << 20
                    stream, head = open_parity(dev, p["name"], chunk)
                    streams.append(stream)
                    header = header or head
                    if p["label"] in suspects:  # damaged: rebuilt, not read
                        why = "parity volume damaged"
                    else:
                        readers[i] = ParityReader(stream, head, dev, p["name"])
                except (ParbackupError, OSError) as exc:
                    why = f"parity volume unreadable: {exc}"
            if why:
                rec.missing[p["label"]] = why
                parity_lost.append(i)
        header = header or _header_from_catalog(set_hex, info)
        if header is None:
            rec.error = "every parity volume of the set is missing"
            for label in info["columns"]:
                if devices.get(label) is None:
                    rec.missing[label] = devices.why.get(label, "unreachable")
            return rec
        data: dict[str, Device | None] = {}
        for col in header.columns:
            dev = devices.get(col.label)
            why = devices.why.get(col.label, "") if dev is None else _column_ok(dev, col, set_hex)
            if why:
                rec.missing[col.label] = why
                dev = None
            data[col.label] = dev
        lost = [c.label for c in header.columns if data[c.label] is None]
        lost += [s for s in suspects if s in data and s not in lost]
        wanted = [label for label in lost if not only or label in only]
        wanted_parity = [i for i in parity_lost if not only or header.parity[i] in only]
        if target_for is None and (survey or not lost):
            return rec
        if target_for is not None:
            for col in header.columns:
                dev = data[col.label]
                tape = copy_sequential and dev is not None and dev.capabilities.sequential
                if col.label in wanted:
                    targets[col.label] = ColumnWriter(target_for(col.label), col)
                elif tape and col.label not in lost:  # a copy only: the tape is still there
                    targets[col.label] = CopyWriter(target_for(col.label), col)
            for i in wanted_parity:
                label = header.parity[i]
                w = target_for(label).create(info["parity"][i]["name"])
                writers.append(w)
                w.write(replace(header, label=label, index=i, length=0).encode())
                parity_targets[i] = w
        outcome = walk_rows(header, data, readers, targets=targets, parity_targets=parity_targets)
        rec.lost_units, rec.unrecoverable = outcome.lost_units, outcome.unrecoverable
        for label in suspects:
            if outcome.lost_units.get(label):
                rec.missing.setdefault(
                    label, f"{outcome.lost_units[label]} damaged unit(s) of {header.unit} bytes"
                )
        if outcome.unrecoverable:
            raise FormatError(
                f"{len(outcome.unrecoverable)} row(s) lost more units than the "
                f"{header.m} parity unit(s) can give back"
            )
        for label, w in targets.items():
            if isinstance(w, CopyWriter) and not w.finished():
                continue  # the copy could not be made: the restore reads the tape again
            w.finish()
            rec.urls.append(label)
        for i, w in parity_targets.items():
            w.write(end_of(header))
            w.commit()
            writers.remove(w)
            rec.urls.append(header.parity[i])
    except (DeviceError, FormatError, UsageError) as exc:
        rec.error = str(exc)
        _abort(targets, writers)
    except BaseException:
        _abort(targets, writers)
        raise
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        rec.where = dict(devices.url_of)
        devices.close()
    return rec


def check_parity(
    catalog: Catalog, set_hex: str, known: dict[str, str], overrides: Sequence[str]
) -> dict[str, str]:
    """label -> what is wrong, for each present parity volume of the set that is not
    whole: every row record and parity unit is checked (CRC, digest) and the end record
    must follow the last row. Missing devices are ``rebuild``'s to report."""
    info = catalog.parity(set_hex)
    bad: dict[str, str] = {}
    if not info:
        return bad
    from parbackup.redundancy.stripe import open_parity
    from parbackup.redundancy.volume import read_row

    devices = _Devices(known, overrides)
    try:
        for p in info["parity"]:
            dev = devices.get(p["label"])
            if dev is None:
                continue
            stream = None
            try:
                stream, head = open_parity(dev, p["name"])
                for row in range(head.rows):
                    got = read_row(stream, head)
                    if got is None or got[0].row != row:
                        raise FormatError(f"row {row} is missing")
                if read_row(stream, head) is not None:
                    raise FormatError("rows after the last one")
            except (ParbackupError, OSError) as exc:
                bad[p["label"]] = f"parity volume damaged: {exc}"
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
    finally:
        devices.close()
    return bad


def _decoded(
    catalog: Catalog,
    sets: Sequence[str],
    known: dict[str, str],
    overrides: Sequence[str],
    suspects: Sequence[str],
    work: str,
    share: bool = True,
) -> Recovery | None:
    """Stand-ins that decode only the rows read (devices/decoded.py): one
    ``decoded://`` device per lost data label, its spec written under ``work``. None
    when a set needs the whole-column rebuild instead (a surviving device is a tape,
    read front to back only, or more units are lost than the parity covers)."""
    total = Recovery(parity=True)
    by_label: dict[str, list[dict]] = {}
    present: dict[str, str] = {}
    for one in sets:
        info = catalog.parity(one) or {}
        found = rebuild(catalog, one, known, overrides, None, suspects=suspects, survey=True)
        present.update(found.where)
        total.missing.update(found.missing)
        total.error = total.error or found.error
        lost = [c for c in info.get("columns", []) if c in found.missing or c in suspects]
        if not lost:
            continue
        if found.error or len(set(found.missing) | set(lost)) > info["m"] or "volumes" not in info:
            return None
        if any(_scheme(url) == "tape" for url in found.where.values()):
            return None
        data = {c: found.where[c] for c in info["columns"] if c in found.where and c not in lost}
        parity = {
            str(i): found.where[p["label"]]
            for i, p in enumerate(info["parity"])
            if p["label"] in found.where and p["label"] not in found.missing
        }
        for label in lost:
            total.missing.setdefault(label, "damaged bytes: read from parity")
            by_label.setdefault(label, []).append(
                {"set": one, "info": info, "data": data, "parity": parity, "lost": lost}
            )
    for stripes in by_label.values():
        for one in stripes:  # surviving data devices, read once for both (devices/shared.py)
            one["data"] = {
                c: _shared(url, c, work, total) if share and _remote(url, c, by_label) else url
                for c, url in one["data"].items()
            }
    for label, stripes in by_label.items():
        path = os.path.join(work, f"{label}.json")
        # the device may still be there, lacking only some sets' volumes: the others
        # (other sets', reused by an incremental) are read from it, not decoded
        spec = {"label": label, "stripes": stripes}
        if label in present and label not in suspects:
            spec["through"] = present[label]
        with open(path, "w") as fh:
            json.dump(spec, fh)
        total.urls.append(f"decoded://{path}")
    return total


def _room(catalog: Catalog, sets: Sequence[str], work: str) -> bool:
    """Whether ``work`` has room for every data column of ``sets`` (the missing ones
    rebuilt, the tapes' copied): a tape is copied only then, never at the cost of the
    room the missing column's rebuild needs."""
    from parbackup.redundancy.volume import header_from_info

    need = 0
    try:
        for one in sets:
            info = catalog.parity(one) or {}
            need += sum(c.length for c in header_from_info(one, info).columns)
        st = os.statvfs(work)
    except (FormatError, OSError):
        return False
    return st.f_bavail * st.f_frsize > need + (16 << 20)


def _scheme(url: str) -> str:
    """A device URL's kind (``file`` for a plain path), through a test-only ``faulty+``
    wrapper."""
    try:
        return parse_url(url).scheme.removeprefix("faulty+")
    except UsageError:
        return ""


def _remote(url: str, label: str, lost: dict) -> bool:
    """Whether a surviving data device is worth sharing between its reader and the
    stand-in: a device reached over a link (SFTP, S3), whose bytes would cross twice.
    A local directory is not: its second read comes from the page cache (bench/parity.py
    --disk: each device read once from the disk, while a spool cost the restore a
    third of its speed on CPU)."""
    return label not in lost and _scheme(url) not in ("file", "memory")


def _shared(url: str, label: str, work: str, total: Recovery) -> str:
    """The stand-in's URL for a surviving data device: ``shared://`` (devices/shared.py),
    whose other end (role 0) goes into ``total.urls`` for the device's own reader, so
    the two read the device's bytes once between them."""
    specs = [os.path.join(work, f"{label}.shared{role}.json") for role in (0, 1)]
    if not os.path.exists(specs[1]):
        spool = os.path.join(work, f"{label}.spool")
        os.makedirs(spool)
        for role, path in enumerate(specs):
            with open(path, "w") as fh:
                json.dump({"url": url, "spool": spool, "role": role}, fh)
        total.urls.append(f"shared://{specs[0]}")
    return f"shared://{specs[1]}"


def _header_from_catalog(set_hex: str, info: dict) -> ParityHeader | None:
    """The stripe as the catalog remembers it (when every parity volume is gone)."""
    if "volumes" not in info:
        return None
    from parbackup.redundancy.volume import header_from_info

    return header_from_info(set_hex, info)


def _abort(targets: dict[str, ColumnWriter], writers: list) -> None:
    """Give up what a failed rebuild was writing; never raises."""
    for target in targets.values():
        target.abort()
    for w in writers:
        with contextlib.suppress(Exception):
            w.abort()


@contextlib.contextmanager
def recovered(
    catalog: Catalog,
    set_hex: str,
    known: dict[str, str],
    overrides: Sequence[str],
    suspects: Sequence[str] = (),
    origins: Iterable[str] | None = None,
    share: bool = True,
) -> Iterator[Recovery]:
    """Stand-ins for a parity set's missing data devices (and ``suspects``, present
    but damaged) for as long as the block runs; ``Recovery.urls`` names them, to be read
    in place of the missing ones. Where it can, a stand-in decodes only the rows read
    (``decoded://``, devices/decoded.py); otherwise (a surviving tape, or more lost than
    the parity covers) the whole columns are rebuilt into a temporary directory. An
    incremental set's records reused from earlier sets lie in those sets' volumes: they
    come back from those sets' own parity, through the same stand-in per label
    (``origins``: those sets, when the caller knows them already). ``share``: the
    surviving data devices' readers run on this host (not ``--cluster``), so each
    device's own reader and the stand-in share its bytes (devices/shared.py)."""
    if origins is None:
        origins = {ref.origin_set for _fid, ref in catalog.records(set_hex) if ref.origin_set}
    origins = set(origins)
    sets = [s for s in [set_hex, *sorted(set(origins) - {set_hex})] if catalog.parity(s)]
    if not sets:
        yield Recovery()
        return
    with scratch.directory("parbackup-rebuild-") as work:
        decoded = _decoded(catalog, sets, known, overrides, suspects, work, share)
        if decoded is not None:
            yield decoded
            return
        made: dict[str, str] = {}

        def target_for(label: str) -> Device:
            path = made.get(label) or os.path.join(work, label)
            dev = open_device(path)
            if label not in made:
                os.makedirs(path)
                dev.open(write=True)
                dev.write_label(Label(label=label, created="", kind=dev.scheme))
                made[label] = path
            else:
                dev.open(write=True)
            return dev

        total = Recovery(parity=True)
        # a surviving tape's columns are copied as the rebuild reads them, so the restore
        # does not read the tape a second time; not where a set reuses records of a set
        # without parity (those would be missing from the copy)
        whole = len(sets) == 1 + len(set(origins) - {set_hex}) and _room(catalog, sets, work)
        for one in sets:
            rec = rebuild(
                catalog, one, known, overrides, target_for, suspects=suspects, copy_sequential=whole
            )
            total.missing.update(rec.missing)
            total.unrecoverable += rec.unrecoverable
            total.error = total.error or rec.error
            for label, n in rec.lost_units.items():
                total.lost_units[label] = total.lost_units.get(label, 0) + n
            total.urls += [made[label] for label in rec.urls if made[label] not in total.urls]
        yield total

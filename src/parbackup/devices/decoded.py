"""``decoded://SPEC``: a lost data device of a parity set, decoded on demand (K1).

Restore and verify read a missing device of a set written with ``--parity`` through
this kind: it is read-only, carries the lost device's label, lists the lost column's
volumes, and answers ``read(volume, offset, length)`` by decoding only the rows that
range falls into, from the surviving data devices and the parity volumes (redundancy/).
So a restore of a few files decodes a few rows, not the whole device, and nothing is
written to disk. ``read_view`` decodes straight into the reader's span buffer: a 16 MiB
span read through ``read`` held it twice more (the bytes gathered, and their copy),
32 MiB of the restore's peak with a device missing (bench/parity.py). A unit the span
covers whole is decoded straight into it; the rows a span covers in part are decoded
into buffers of ours and the last two kept (a reader's spans run forward). The
surviving units are read straight into reusable buffers (a parity unit with its row
record, in one read), k of them a row: copying them cost the stand-in's reader a fifth
of its CPU (docs/BENCHMARKS.md, session 13).

Decoding needs every surviving column and parity volume in one place, so a stand-in
is read on the host that runs the restore: with ``--cluster`` a reader placed on another
host finds no spec there and says so (DeviceMissingError), as the restore then does.

``SPEC`` is the path of a JSON file written by readback/recover.py: the lost label,
the set, the stripe as the catalog keeps it, and the URL of every device that is still
there (data devices by label, parity devices by index). The decoded unit is checked
against the digest its row record keeps; only where it differs are the surviving units
checked against theirs (every unit of the row read), the damaged ones left out and the
row decoded again from the rest, or refused if fewer than k are good.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from parbackup.devices.base import Device, ObjectInfo, ReadOnlyDevice
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.errors import DeviceError, DeviceMissingError, FormatError, ParbackupError
from parbackup.model import Capabilities, Label
from parbackup.redundancy.codec import CODEC, RowCodec, check_params, tune_allocator
from parbackup.redundancy.isal import Decoder, address
from parbackup.redundancy.layout import Column, rows_of
from parbackup.redundancy.stripe import HEADER_CHUNK, open_parity
from parbackup.redundancy.volume import (
    RowRecord,
    header_from_info,
    parse_row_record,
    row_record_size,
    unit_digest,
)

_CACHED_ROWS = 2


class _Stripe:
    """One set's stripe as the decoded device sees it: the lost column, the devices
    still there, and the last rows decoded."""

    def __init__(self, spec: dict, label: str, where: str) -> None:
        self.where = where
        header = header_from_info(spec["set"], spec["info"])
        labels = [c.label for c in header.columns]
        if label not in labels:
            raise FormatError(f"{where}: {label} is not a column of set {spec['set']}")
        self.header, self.index = header, labels.index(label)
        self.column = header.columns[self.index]
        self.sizes = dict(self.column.volumes)
        check_params(header.k, header.m)  # as RowCodec would: a usage error
        if header.codec != CODEC or header.unit <= 0 or header.unit % 64:
            raise FormatError(f"{where}: not a stripe this reader decodes ({header.codec})")
        self.data: dict[int, Device] = {}
        self.parity: dict[int, tuple[Device, str, int]] = {}
        self.rows: OrderedDict[int, bytes | bytearray] = OrderedDict()
        self.units: dict[int, bytearray] = {}
        """A reusable buffer per surviving unit of a row (data; parity with its row record
        before it, as one read gets them)."""
        # each row's units are read as fresh 1 MiB blocks: from the heap, not fresh mmaps
        # (redundancy/codec.py; the 8 MiB header read did this by chance until the
        # header was read in small chunks, and the degraded restore ran at half speed)
        tune_allocator()
        self.decoder = Decoder.load(header.k, header.m, header.unit)
        self.codec = None if self.decoder else RowCodec(header.k, header.m, header.unit)
        self.spare: list[bytearray] = []
        lost = set(spec.get("lost", [])) | {label}
        for j, col in enumerate(header.columns):
            url = spec["data"].get(col.label)
            if url and col.label not in lost:
                self.data[j] = _open(url)
        for i, entry in enumerate(spec["info"]["parity"]):
            url = spec["parity"].get(str(i))
            if url:
                dev = _open(url)
                stream, head = open_parity(dev, entry["name"], HEADER_CHUNK)
                with contextlib.suppress(Exception):
                    stream.close()
                self.parity[i] = (dev, entry["name"], head.length)

    def devices(self) -> list[Device]:
        return [*self.data.values(), *(d for d, _n, _l in self.parity.values())]

    def length(self, name: str, offset: int, length: int) -> int:
        """How many bytes a read of ``length`` at ``offset`` of volume ``name`` gives."""
        return max(0, min(length, self.sizes[name] - offset))

    def read_into(self, name: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` (writable) with the volume's bytes from ``offset`` on, decoding
        the rows they lie in; ``out`` must not reach past the volume's end. A whole unit
        that ``out`` covers is decoded straight into it; a unit it covers in part (a
        span's ends) is decoded into a buffer of ours and kept, for the next span."""
        unit, length = self.header.unit, len(out)
        at = self.column.start_of(name) + offset
        done = 0
        for row in rows_of(at, length, unit):
            lo = max(at, row * unit) - row * unit
            hi = min(at + length, (row + 1) * unit) - row * unit
            target = out[done : done + hi - lo]
            if hi - lo == unit and self.decoder is not None and row not in self.rows:
                self._decode(row, target)
            else:
                target[:] = memoryview(self.row(row))[lo:hi]
            done += hi - lo

    def row(self, row: int) -> bytes | bytearray:
        """The lost column's unit of ``row``, decoded (the last few are kept)."""
        if row in self.rows:
            self.rows.move_to_end(row)
            return self.rows[row]
        if self.decoder is None:
            mine: bytes | bytearray = self._decode_by_codec(row)
        else:
            mine = self.spare.pop() if self.spare else bytearray(self.header.unit)
            self._decode(row, memoryview(mine))
        self.rows[row] = mine
        while len(self.rows) > _CACHED_ROWS:
            _old, spare = self.rows.popitem(last=False)
            if isinstance(spare, bytearray):
                self.spare.append(spare)
        return mine

    def _decode(self, row: int, target: memoryview) -> None:
        """The lost column's unit of ``row`` into ``target`` (writable, ``unit`` bytes),
        by ISA-L, checked against its digest. The units are used as read: checking each
        surviving unit's digest first cost as much as the decoding (XXH3 of k units a
        row, where the one of the result tells the same). Only when the result is wrong
        are they checked, the damaged ones left out and the row decoded again from the
        rest (every parity unit read now), if enough are left."""
        assert self.decoder is not None
        record, present = self._gather(row)
        digests, version = record.digests, self.header.version
        try:
            self._recover(present, target)
            if unit_digest(target, version) == digests[self.index]:
                return
            record, present = self._gather(row, every=True)
            good = {i: u for i, u in present.items() if unit_digest(u, version) == digests[i]}
            self._recover(good, target)
        except ValueError as exc:
            raise DeviceError(f"{self.where}: row {row}: {exc}") from exc
        if unit_digest(target, version) != digests[self.index]:
            raise DeviceError(f"{self.where}: row {row} decodes to the wrong bytes")

    def _recover(self, present: dict[int, memoryview], target: memoryview) -> None:
        assert self.decoder is not None
        self.decoder.recover(
            {i: address(u) for i, u in present.items()}, {self.index: address(target)}
        )

    def _gather(self, row: int, every: bool = False) -> tuple[RowRecord, dict[int, memoryview]]:
        """Row ``row``'s record (from the first parity volume that gives it whole) and
        the units read of it (index -> a view of a buffer of ours, ``unit`` bytes; data
        units past a column's end zero-padded), not yet checked: the surviving data
        units, then parity units until k units are there (``every``: all of them; a
        stripe with more parity than lost columns reads no unit it does not use). Each
        is read straight into its reusable buffer where the device can."""
        header, k, unit = self.header, self.header.k, self.header.unit
        size = row_record_size(k, header.m, header.version)
        present: dict[int, memoryview] = {}
        for j, dev in self.data.items():
            buf = self._unit_buffer(j, unit)
            if _read_unit(dev, header.columns[j], row, buf):
                present[j] = memoryview(buf)
        record = None
        for i, (dev, name, base) in self.parity.items():
            if record is not None and len(present) >= k and not every:
                break
            buf = self._unit_buffer(k + i, size + unit)
            try:
                view = _read_exact(dev, name, base + row * (size + unit), size + unit, buf)
                got = parse_row_record(bytes(view[:size]), replace(header, index=i))
            except (ParbackupError, OSError):
                continue
            if got.row == row:
                record = record or got
                present[k + i] = view[size:]
        if record is None:
            raise DeviceError(f"{self.where}: no parity row {row} can be read")
        return record, present

    def _decode_by_codec(self, row: int) -> bytes:
        """Where ISA-L cannot be loaded: the row coder, from units checked first."""
        assert self.codec is not None
        header, unit = self.header, self.header.unit
        record, units = self._gather(row, every=True)
        present = {
            i: bytes(u)
            for i, u in units.items()
            if unit_digest(u, header.version) == record.digests[i]
        }
        try:
            whole = self.codec.decode_data(present, record.fragments)
        except (FormatError, ValueError) as exc:
            raise DeviceError(f"{self.where}: row {row}: {exc}") from exc
        mine = bytes(whole[self.index * unit : (self.index + 1) * unit])
        if unit_digest(mine, header.version) != record.digests[self.index]:
            raise DeviceError(f"{self.where}: row {row} decodes to the wrong bytes")
        return mine

    def _unit_buffer(self, index: int, size: int) -> bytearray:
        buf = self.units.get(index)
        if buf is None:
            buf = self.units[index] = bytearray(size)
        return buf


class DecodedDevice(ReadOnlyDevice):
    """A lost data device of parity sets, decoded row by row on demand (read-only)."""

    scheme = "decoded"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=4)

    def __init__(self, url: Any) -> None:
        super().__init__(url)
        self.label = ""
        self.stripes: dict[str, _Stripe] = {}
        self.through: Device | None = None
        """The device itself where it is still there: volumes no stripe decodes
        (other sets' volumes it still holds) are read from it."""

    def open(self, write: bool = True) -> None:
        if write:
            raise self.read_only()
        try:
            with open(self.url.path, "rb") as fh:
                spec = json.load(fh)
            self.label = str(spec["label"])
            for one in spec["stripes"]:
                self.stripes[one["set"]] = _Stripe(one, self.label, self.url.display)
            if spec.get("through"):
                self.through = _open(str(spec["through"]))
        except FileNotFoundError as exc:
            self.close()
            if exc.filename != self.url.path:  # a surviving device's file
                raise DeviceError(f"{self.url.display}: {exc}") from exc
            raise DeviceMissingError(
                f"{self.url.display}: this stand-in for a missing device is described on"
                " the host that runs the restore only: a set is read around a missing"
                " device there (restore without --cluster, from a host that reaches every"
                " surviving device)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.close()
            raise DeviceError(f"{self.url.display}: unusable decoded-device spec") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for stripe in self.stripes.values():
            for dev in stripe.devices():
                with contextlib.suppress(Exception):
                    dev.close()
        self.stripes = {}
        if self.through is not None:
            with contextlib.suppress(Exception):
                self.through.close()
            self.through = None

    def read_label(self) -> Label | None:
        return Label(label=self.label, created="", kind=self.scheme)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        out = [ObjectInfo(n, s) for st in self.stripes.values() for n, s in st.column.volumes]
        if self.through is not None:
            mine = {o.name for o in out}
            out += [o for o in self.through.list(prefix) if o.name not in mine]
        return sorted((o for o in out if o.name.startswith(prefix)), key=lambda o: o.name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        if self.through is not None and not self._decodes(name):
            return self.through.read(name, offset, length)
        stripe = self._stripe(name)
        out = bytearray(stripe.length(name, offset, length))
        stripe.read_into(name, offset, memoryview(out))
        return bytes(out)

    def read_view(self, name: str, offset: int, length: int, buf: bytearray) -> memoryview:
        """Decoded into ``buf`` where it is large enough (see the module docstring)."""
        if self.through is not None and not self._decodes(name):
            return self.through.read_view(name, offset, length, buf)
        stripe = self._stripe(name)
        n = stripe.length(name, offset, length)
        if len(buf) < n:
            return memoryview(self.read(name, offset, length))
        view = memoryview(buf)[:n]
        stripe.read_into(name, offset, view)
        return view

    def _decodes(self, name: str) -> bool:
        return any(name in stripe.sizes for stripe in self.stripes.values())

    def _stripe(self, name: str) -> _Stripe:
        for stripe in self.stripes.values():
            if name in stripe.sizes:
                return stripe
        raise DeviceMissingError(f"{self.url.display}: no object {name}")


def _open(url: str) -> Device:
    dev = RetryingDevice(open_device(url))
    dev.open(write=False)
    return dev


def _read_exact(dev: Device, name: str, offset: int, n: int, buf: bytearray) -> memoryview:
    """``n`` bytes of ``name`` at ``offset`` as a view of ``buf`` (read into it where
    the device can, else copied); FormatError if fewer are there."""
    view = dev.read_view(name, offset, n, buf)
    if len(view) != n:
        raise FormatError(f"{name}: {len(view)} bytes at {offset}, not {n}")
    if view.obj is not buf:
        buf[:n] = view
        view = memoryview(buf)[:n]
    return view


def _read_unit(dev: Device, col: Column, row: int, out: bytearray) -> bool:
    """A column's unit of ``row`` read at random into ``out`` (zero-padded); False if
    it cannot be read."""
    unit = len(out)
    try:
        spans = col.spans(row * unit, unit)
        if len(spans) == 1:  # the usual case: the unit lies in one volume
            name, offset, n = spans[0]
            _read_exact(dev, name, offset, n, out)
            done = n
        else:
            done = 0
            for name, offset, n in spans:
                data = dev.read(name, offset, n)
                if len(data) != n:
                    return False
                out[done : done + n] = data
                done += n
    except (ParbackupError, OSError):
        return False
    if done < unit:
        out[done:] = bytes(unit - done)
    return True

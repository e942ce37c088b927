"""``decoded://SPEC``: a lost data device of a parity set, decoded on demand (K1).

Restore and verify read a missing device of a set written with ``--parity`` through
this kind: it is read-only, carries the lost device's label, lists the lost column's
volumes, and answers ``read(volume, offset, length)`` by decoding only the rows that
range falls into, from the surviving data devices and the parity volumes (redundancy/).
So a restore of a few files decodes a few rows, not the whole device, and nothing is
written to disk. The last two decoded rows are kept (a reader's spans run forward).
``read_view`` decodes straight into the reader's span buffer: a 16 MiB span read through
``read`` held it twice more (the bytes gathered, and their copy), 32 MiB of the
restore's peak with a device missing (bench/parity.py).

Decoding needs every surviving column and parity volume in one place, so a stand-in
is read on the host that runs the restore: with ``--cluster`` a reader placed on another
host finds no spec there and says so (DeviceMissingError), as the restore then does.

``SPEC`` is the path of a JSON file written by readback/recover.py: the lost label,
the set, the stripe as the catalog keeps it, and the URL of every device that is still
there (data devices by label, parity devices by index). A surviving data unit is
checked against the digest its row record keeps, and counts as lost if it differs.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from parbackup.devices.base import Device, ObjectInfo, ObjectWriter
from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.errors import DeviceError, DeviceMissingError, FormatError, ParbackupError
from parbackup.model import Capabilities, Label, Space
from parbackup.redundancy.codec import CODEC, RowCodec, check_params, tune_allocator
from parbackup.redundancy.isal import Decoder, address
from parbackup.redundancy.layout import Column, rows_of
from parbackup.redundancy.stripe import HEADER_CHUNK, open_parity
from parbackup.redundancy.volume import (
    header_from_info,
    read_row,
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
        self.rows: OrderedDict[int, bytes] = OrderedDict()
        self.units: dict[int, bytearray] = {}
        """A reusable buffer per surviving unit of a row (data, then parity)."""
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
        """Fill ``out`` with the volume's bytes from ``offset`` on (decoding the rows
        they lie in); ``out`` must not reach past the volume's end."""
        unit, length = self.header.unit, len(out)
        at = self.column.start_of(name) + offset
        done = 0
        for row in rows_of(at, length, unit):
            data = self.row(row)
            lo = max(at, row * unit) - row * unit
            hi = min(at + length, (row + 1) * unit) - row * unit
            out[done : done + hi - lo] = memoryview(data)[lo:hi]
            done += hi - lo

    def row(self, row: int) -> bytes | bytearray:
        """The lost column's unit of ``row``, decoded (the last few are kept)."""
        if row in self.rows:
            self.rows.move_to_end(row)
            return self.rows[row]
        header, k, unit = self.header, self.header.k, self.header.unit
        present: dict[int, bytes | bytearray] = {}
        record = None
        step = row_record_size(k, header.m, header.version) + unit
        for i, (dev, name, base) in self.parity.items():
            try:
                blob = dev.read(name, base + row * step, step)
                got = read_row(io.BytesIO(blob), replace(header, index=i))
            except (ParbackupError, OSError):
                continue
            if got is not None and got[0].row == row:
                record = record or got[0]
                if self.decoder is None:
                    present[k + i] = got[1]
                else:  # the decoder reads it by address: into a buffer of ours
                    buf = self._unit_buffer(k + i)
                    buf[:] = got[1]
                    present[k + i] = buf
        if record is None:
            raise DeviceError(f"{self.where}: no parity row {row} can be read")
        for j, dev in self.data.items():
            buf = self._unit_buffer(j)
            if _read_unit(dev, header.columns[j], row, buf) and (
                unit_digest(buf, header.version) == record.digests[j]
            ):
                present[j] = buf
        try:
            mine = self._decode(present, record.fragments)
        except (FormatError, ValueError) as exc:
            raise DeviceError(f"{self.where}: row {row}: {exc}") from exc
        if unit_digest(mine, header.version) != record.digests[self.index]:
            raise DeviceError(f"{self.where}: row {row} decodes to the wrong bytes")
        self.rows[row] = mine
        while len(self.rows) > _CACHED_ROWS:
            _old, spare = self.rows.popitem(last=False)
            if isinstance(spare, bytearray):
                self.spare.append(spare)
        return mine

    def _unit_buffer(self, index: int) -> bytearray:
        buf = self.units.get(index)
        if buf is None:
            buf = self.units[index] = bytearray(self.header.unit)
        return buf

    def _decode(self, present: dict, fragments: tuple[bytes, ...]) -> bytes | bytearray:
        """The lost column's unit from the units ``present``: by ISA-L into a buffer
        of ours (a cached row's, once it has left the cache), else by the row coder."""
        unit = self.header.unit
        if self.decoder is None:
            assert self.codec is not None
            at = self.index * unit
            return self.codec.decode_data(present, fragments)[at : at + unit]
        mine = self.spare.pop() if self.spare else bytearray(unit)
        self.decoder.recover(
            {i: address(u) for i, u in present.items()}, {self.index: address(mine)}
        )
        return mine


class DecodedDevice(Device):
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
            raise DeviceError(f"{self.url.display}: a decoded device is read-only")
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

    def raw_space(self) -> Space:
        return Space(free=0, capacity=None)

    def create(self, name: str) -> ObjectWriter:
        raise DeviceError(f"{self.url.display}: a decoded device is read-only")

    def delete(self, name: str) -> None:
        raise DeviceError(f"{self.url.display}: a decoded device is read-only")

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


def _read_unit(dev: Device, col: Column, row: int, out: bytearray) -> bool:
    """A column's unit of ``row`` read at random into ``out`` (zero-padded); False if
    it cannot be read."""
    unit, done = len(out), 0
    for name, offset, n in col.spans(row * unit, unit):
        try:
            data = dev.read(name, offset, n)
        except (ParbackupError, OSError):
            return False
        if len(data) != n:
            return False
        out[done : done + n] = data
        done += n
    out[done:] = bytes(unit - done)
    return True

"""``rebuild-catalog`` and parity volumes (engine/rebuild.py, REQUIREMENTS X2, K1).

A parity volume's header names its set, codec, k, m, unit and every column with its
volumes, so the devices alone tell a set's stripe: ``scan_parity`` reads the headers and
``parity_info`` turns them into what the catalog keeps (``Catalog.set_parity``). When a
data device of such a set is not among the devices given, ``rebuild_missing`` decodes
its columns from the others into a scratch directory, so its records can be read and
entered too: the rebuilt catalog then restores the set whole (reading around the
missing device again), instead of listing its files as incomplete.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from parbackup.devices.registry import open_device
from parbackup.engine.devices import OpenDevice
from parbackup.errors import DeviceError, FormatError
from parbackup.model import Label
from parbackup.redundancy.stripe import ColumnWriter, ParityReader, open_parity, walk_rows
from parbackup.redundancy.volume import ParityHeader, parity_name


@dataclass
class ParityFound:
    """One parity volume found on a device."""

    header: ParityHeader
    device: OpenDevice
    name: str
    size: int


def scan_parity(dev: OpenDevice) -> tuple[list[ParityFound], list[dict]]:
    """The parity volumes on one device, and the unreadable ones (damage entries)."""
    found: list[ParityFound] = []
    damaged: list[dict] = []
    objects = [o for o in dev.device.list("sets/") if o.name.endswith(".pbp")]
    for obj in sorted(objects, key=lambda o: o.name):
        stream = None
        try:
            stream, header = open_parity(dev.device, obj.name)
            found.append(ParityFound(header, dev, obj.name, obj.size))
        except (DeviceError, FormatError, OSError) as exc:
            damaged.append({"volume": obj.name, "device": dev.url, "error": str(exc)})
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
    return found, damaged


def parity_info(volumes: list[ParityFound]) -> dict:
    """What the catalog keeps of a set's parity (engine/parity.py's shape)."""
    head = volumes[0].header
    by_index = {v.header.index: v for v in volumes}
    return {
        "codec": head.codec,
        "k": head.k,
        "m": head.m,
        "unit": head.unit,
        "columns": [c.label for c in head.columns],
        "volumes": [c.to_json() for c in head.columns],
        "rows": head.rows,
        "created_ns": head.created_ns,
        "version": head.version,
        "parity": [
            {
                "label": label,
                "url": by_index[i].device.url if i in by_index else "",
                "name": by_index[i].name
                if i in by_index
                else parity_name(head.set_id.hex(), label, i),
                "size": by_index[i].size if i in by_index else 0,
            }
            for i, label in enumerate(head.parity)
        ],
    }


def rebuild_missing(
    volumes: list[ParityFound], present: dict[str, OpenDevice], work: str
) -> tuple[list[OpenDevice], str]:
    """Decode the set's data columns whose devices are not ``present`` into directories
    under ``work``; the scratch devices (labelled as the missing ones), and an error
    ('' if every missing column came back)."""
    head = volumes[0].header
    missing = [c for c in head.columns if c.label not in present]
    if not missing:
        return [], ""
    streams = []
    made: list[OpenDevice] = []
    try:
        readers: dict[int, ParityReader] = {}
        for v in volumes:
            stream, header = open_parity(v.device.device, v.name)
            streams.append(stream)
            readers[v.header.index] = ParityReader(stream, header, v.device.device, v.name)
        targets: dict[str, ColumnWriter] = {}
        for col in missing:
            path = os.path.join(work, head.set_id.hex(), col.label)
            os.makedirs(path)
            dev = open_device(path)
            dev.open(write=True)
            label = Label(label=col.label, created="", kind=dev.scheme)
            dev.write_label(label)
            made.append(OpenDevice(len(made), path, dev, label, dev.space()))
            targets[col.label] = ColumnWriter(dev, col)
        data = {label: d.device for label, d in present.items()}
        outcome = walk_rows(head, data, readers, targets=targets)
        if outcome.unrecoverable:
            return [], (
                f"{len(outcome.unrecoverable)} row(s) cannot be decoded: more devices are "
                f"missing than the set's {head.m} parity device(s) can stand in for"
            )
        for w in targets.values():
            w.finish()
        return made, ""
    except (DeviceError, FormatError, OSError) as exc:
        return [], str(exc)
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()

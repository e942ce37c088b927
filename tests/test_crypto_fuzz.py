"""Version-4 volumes (compressed and sealed) under random damage: the parsers and
rebuild-catalog's reader only ever report damage (FormatError or a noted damage), never
crash, and never take a damaged sealed record for a good one (issue 13)."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_format import parse_volume
from parbackup.crypto.codec import Codec, CodecSpec, Place, RecordMeta, label_bytes
from parbackup.devices.registry import open_device
from parbackup.engine.volscan import read_volume as _read_volume
from parbackup.errors import FormatError
from parbackup.format import VolumeHeader, encode_record_header, end_record

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
MASTER = bytes(range(32))
SET = bytes(range(16))
LABEL = "0123456789abcdef0123456789abcdef"


def v4_volume(codec: Codec) -> bytes:
    """A small valid version-4 volume: a compressible file, a random one, a directory."""
    volume_id = bytes(range(100, 116))
    label = label_bytes(LABEL)
    meta = codec.seal_header_meta({"set": SET.hex(), "label": LABEL, "volume": 1}, SET, label,
                                  volume_id)  # fmt: skip
    data = bytearray(VolumeHeader(SET, label, 1, 1, meta).encode())
    items = [(1, b"text " * 2000), (1, os.urandom(3000)), (2, b"")]
    for fid, (code, payload) in enumerate(items):
        rm = RecordMeta(0o100644, 0, 0, 0, f"/s/f{fid}".encode(), b"")
        flags, stored = codec.encode(payload, set_id=SET, file_id=fid, offset=0,
                                     file_size=len(payload), kind=code, meta=rm,
                                     place=Place(label, volume_id))  # fmt: skip
        shown = RecordMeta(0, 0, 0, 0, b"", b"") if codec.encrypted else rm
        data += encode_record_header(code, SET, fid, 0, len(payload), len(payload), shown.mode,
                                     0, 0, 0, codec.digest(payload), shown.path, b"", flags,
                                     len(stored))  # fmt: skip
        data += bytes(stored)
    data += end_record(SET, len(items)).encode()
    return bytes(data)


SEALED = Codec(CodecSpec(0, MASTER, b"k" * 16))
PACKED = Codec(CodecSpec(0))
VOLUMES = {"sealed": v4_volume(SEALED), "compressed": v4_volume(PACKED)}


def test_valid_v4_volumes_rebuild_whole() -> None:
    for name, codec in (("sealed", SEALED), ("compressed", PACKED)):
        dev = open_device(f"memory://fuzz-v4-{name}")
        dev.put("sets/x/v.pbv", VOLUMES[name])
        found: dict = {}
        _read_volume(dev, LABEL, "sets/x/v.pbv", found, codec)
        (entry,) = found.values()
        assert not entry.damaged and entry.closed == 1
        assert sorted(e.path for e in entry.files.values()) == ["/s/f0", "/s/f1", "/s/f2"]
        assert parse_volume(VOLUMES[name]) == 3


@FUZZ
@given(st.sampled_from(["sealed", "compressed"]), st.data())
def test_mutated_v4_volumes_only_report_damage(name: str, data) -> None:
    codec = SEALED if name == "sealed" else PACKED
    raw = bytearray(VOLUMES[name])
    flips = data.draw(st.integers(1, 4))
    for _ in range(flips):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    parse_volume(bytes(raw))  # returns or raises FormatError inside: the contract
    dev = open_device(f"memory://fuzz-v4-m-{name}")
    dev.put("sets/x/v.pbv", bytes(raw))
    found: dict = {}
    with contextlib.suppress(FormatError):  # an unreadable volume header
        _read_volume(dev, LABEL, "sets/x/v.pbv", found, codec)
    good = _records(codec, VOLUMES[name])
    for entry in found.values():  # a record taken as good is one that was not changed
        for fid, ref in entry.records:
            assert (fid, ref.checksum, entry.files[fid].path) in good


def _records(codec: Codec, volume: bytes) -> set:
    dev = open_device("memory://fuzz-v4-pristine")
    dev.put("sets/x/v.pbv", volume)
    found: dict = {}
    _read_volume(dev, LABEL, "sets/x/v.pbv", found, codec)
    (entry,) = found.values()
    return {(fid, ref.checksum, entry.files[fid].path) for fid, ref in entry.records}

"""The kind-8 "meta" payload (parbackup/xattrs.py) and its record (record version 3).

Properties: every set of attributes within the bounds encodes to one payload that
decodes back to it; any byte string either decodes to attributes that encode back to
exactly the same bytes, or is rejected with FormatError (never another exception);
the bound is enforced on both sides.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup import xattrs
from parbackup.errors import FormatError
from parbackup.format import (
    RecordHeader,
    checksum,
    iter_volume,
    parse_record_header,
    read_record,
)

names = st.binary(min_size=1, max_size=xattrs.MAX_NAME).filter(lambda b: b"\0" not in b)
attrs = st.dictionaries(names, st.binary(max_size=2048), max_size=12)


@given(attrs)
@settings(max_examples=300, deadline=None)
def test_encode_then_decode_gives_the_attributes_back(a):
    payload = xattrs.encode(a)
    assert xattrs.decode(payload) == a
    assert len(payload) <= xattrs.MAX_META


@given(st.binary(max_size=4096))
@settings(max_examples=2000, deadline=None)
def test_any_bytes_decode_canonically_or_fail_with_format_error(data):
    try:
        a = xattrs.decode(data)
    except FormatError:
        return
    assert xattrs.encode(a) == data


@given(attrs, st.data())
@settings(max_examples=300, deadline=None)
def test_a_flipped_or_cut_payload_never_crashes(a, data):
    payload = bytearray(xattrs.encode(a))
    at = data.draw(st.integers(0, len(payload) - 1))
    if data.draw(st.booleans()):
        payload[at] ^= data.draw(st.integers(1, 255))
    else:
        del payload[at:]
    try:
        got = xattrs.decode(bytes(payload))
    except FormatError:
        return
    assert xattrs.encode(got) == bytes(payload)


def test_the_bound_holds_on_both_sides():
    big = {b"user.a": bytes(40_000), b"user.b": bytes(40_000)}
    with pytest.raises(xattrs.TooLarge):
        xattrs.encode(big)
    with pytest.raises(xattrs.TooLarge):
        xattrs.encode({b"user.huge": bytes(xattrs.MAX_VALUE + 1)})
    forged = struct.pack("<BH", 1, 1) + b"\x06user.a" + struct.pack("<I", 70_000) + bytes(70_000)
    with pytest.raises(FormatError):
        xattrs.decode(forged)


def test_unordered_or_repeated_names_are_rejected():
    one = b"\x06user.a" + struct.pack("<I", 1) + b"x"
    with pytest.raises(FormatError):
        xattrs.decode(struct.pack("<BH", 1, 2) + one + one)


def _meta_header(payload: bytes, **change) -> RecordHeader:
    fields = dict(
        kind="meta",
        set_id=bytes(16),
        file_id=3,
        offset=0,
        size=len(payload),
        file_size=len(payload),
        mode=0o100644,
        uid=0,
        gid=0,
        mtime_ns=0,
        checksum=checksum(payload),
        path=b"/src/f",
    )
    fields.update(change)
    return RecordHeader(**fields)


def test_a_meta_record_is_version_3_and_reads_back():
    payload = xattrs.encode({b"user.k": b"v", b"security.capability": b"\1\0\0\2"})
    encoded = _meta_header(payload).encode()
    assert struct.unpack_from("<HH", encoded, 4) == (3, 8)
    header, got = read_record(io.BytesIO(encoded + payload))
    assert header.kind == "meta" and xattrs.decode(got)[b"user.k"] == b"v"


@pytest.mark.parametrize(
    "change",
    [
        {"offset": 1, "file_size": 100},
        {"file_size": 1000},
        {"size": xattrs.MAX_META + 1, "file_size": xattrs.MAX_META + 1},
        {"link": b"x"},
    ],
)
def test_a_malformed_meta_record_header_is_rejected(change):
    with pytest.raises(FormatError):
        parse_record_header(_meta_header(b"\1\0\0", **change).encode())


def test_a_version_2_record_may_not_carry_kind_8():
    encoded = bytearray(_meta_header(b"\1\0\0").encode())
    struct.pack_into("<H", encoded, 4, 2)
    with pytest.raises(FormatError, match="unknown record kind 8"):
        parse_record_header(bytes(encoded))


def test_iter_volume_yields_meta_records_in_line():
    payload = xattrs.encode({b"user.x": b"1"})
    body = _meta_header(payload).encode() + payload
    end = RecordHeader("end", bytes(16), 0, 0, 0, 1, 0, 0, 0, 0, bytes(32), b"").encode()
    got = list(iter_volume(io.BytesIO(body + end), 0))
    assert [h.kind for _p, h, _b in got] == ["meta"]

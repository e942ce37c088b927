"""Round trips and rejections of the on-device record and volume format."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parbackup.errors import ChecksumError, FormatError
from parbackup.format import (
    RECORD_FIXED_SIZE,
    RecordHeader,
    VolumeHeader,
    checksum,
    decode_record_header,
    end_record,
    iter_volume,
    parse_record_header,
    read_volume_header,
)

names = st.binary(min_size=1, max_size=300)
headers = st.builds(
    RecordHeader,
    kind=st.sampled_from(["file", "dir", "symlink"]),
    set_id=st.binary(min_size=16, max_size=16),
    file_id=st.integers(0, 2**63),
    offset=st.integers(0, 2**40),
    size=st.integers(0, 4096),
    file_size=st.just(2**41),
    mode=st.integers(0, 2**32 - 1),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    mtime_ns=st.integers(-(2**63), 2**63 - 1),
    checksum=st.binary(min_size=32, max_size=32),
    path=names,
    link=st.binary(max_size=100),
)


@given(headers)
def test_record_header_round_trip(header):
    assert parse_record_header(header.encode()) == header


@given(headers, st.data())
def test_any_flipped_byte_in_a_header_is_rejected(header, data):
    raw = bytearray(header.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FormatError):
        parse_record_header(bytes(raw))


def build_volume(payloads: list[bytes]) -> tuple[bytes, int]:
    set_id = b"s" * 16
    vh = VolumeHeader(set_id, b"l" * 16, 1, 0, {"set": "x"}).encode()
    out = bytearray(vh)
    offset = 0
    total = sum(len(p) for p in payloads)
    for p in payloads:
        h = RecordHeader(
            "file", set_id, 7, offset, len(p), total, 0o644, 0, 0, 1, checksum(p), b"/a/b"
        )
        out += h.encode() + p
        offset += len(p)
    out += end_record(set_id, len(payloads)).encode()
    return bytes(out), len(vh)


@given(st.lists(st.binary(max_size=2000), max_size=8))
def test_volume_round_trip(payloads):
    raw, start = build_volume(payloads)
    stream = io.BytesIO(raw)
    assert read_volume_header(stream).length == start
    got = [p for _, _, p in iter_volume(stream, start)]
    assert got == payloads


def test_flipped_payload_byte_is_a_checksum_error():
    raw, start = build_volume([b"hello world" * 100])
    damaged = bytearray(raw)
    damaged[start + 200] ^= 1
    stream = io.BytesIO(bytes(damaged))
    read_volume_header(stream)
    with pytest.raises(ChecksumError):
        list(iter_volume(stream, start))


def test_cut_volume_is_reported():
    raw, start = build_volume([b"x" * 50, b"y" * 50])
    stream = io.BytesIO(raw[:-10])
    read_volume_header(stream)
    with pytest.raises(FormatError):
        list(iter_volume(stream, start))


def test_garbage_is_not_a_volume():
    with pytest.raises(FormatError):
        read_volume_header(io.BytesIO(b"\0" * 100))


@given(headers, st.binary(max_size=64), st.integers(-1, 2**20), st.data())
def test_both_parsers_agree_in_a_larger_buffer(header, after, stored, data):
    """A reader parses a header in place in its read buffer (parse_record_header on a
    view with the payload after it); a volume scan reads it in two parts
    (decode_record_header): same header, or both reject the same damage."""
    if stored >= 0:  # a version-4 header: the stored size after the fixed part
        header = dataclasses.replace(header, stored=stored, flags=1)
    raw = bytearray(header.encode())
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    buf = memoryview(bytes(raw) + after)
    fixed = RECORD_FIXED_SIZE

    def whole() -> RecordHeader:
        return parse_record_header(buf)

    def parts() -> RecordHeader:
        return decode_record_header(bytes(buf[:fixed]), lambda n: bytes(buf[fixed : fixed + n]))

    try:
        expected = parts()
    except FormatError as exc:
        with pytest.raises(FormatError, match=re.escape(str(exc))):
            whole()
        return
    assert whole() == expected
    if bytes(raw) == header.encode():
        assert expected == header

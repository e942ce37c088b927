"""The header and volume parsers reject garbage with FormatError, never anything else."""

from __future__ import annotations

import contextlib
import io
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_format import CORPUS, corpus, parse_volume, sample_volume
from parbackup.errors import FormatError
from parbackup.format import _RECORD, _VOLUME, read_record, read_volume_header

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


def test_corpus_is_present_and_parses_within_contract():
    inputs = corpus()
    assert len(inputs) >= 5
    for data in inputs:
        parse_volume(data)


def test_sample_volume_parses_fully():
    assert parse_volume(sample_volume(5)) == 5


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    parse_volume(data)


@FUZZ
@given(st.sampled_from(range(8)), st.data())
def test_mutated_corpus(which, data):
    inputs = corpus()
    raw = bytearray(inputs[which % len(inputs)])
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == 0 and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == 1:
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    parse_volume(bytes(raw))


def _resealed_record(fields: dict) -> bytes:
    """A record header with chosen fields and a *valid* CRC: what a forger would write."""
    values = {
        "magic": b"PBKR",
        "version": 1,
        "kind": 1,
        "length": _RECORD.size + 4,
        "set": bytes(16),
        "file": 0,
        "offset": 0,
        "size": 0,
        "file_size": 0,
        "mode": 0,
        "uid": 0,
        "gid": 0,
        "mtime": 0,
        "flags": 0,
        "digest": bytes(32),
        "plen": 0,
        "llen": 0,
        **fields,
    }
    body = _RECORD.pack(*values.values())
    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": 15, "size": 1 << 62},  # an end record claiming a huge payload
        {"size": 1 << 40, "file_size": 1 << 41},
        {"plen": 1 << 31, "length": _RECORD.size + 4 + (1 << 31)},
        {"length": 1 << 31},
        {"offset": 1 << 62, "size": 10, "file_size": 10},
        {"version": 999},
        {"kind": 99},
    ],
)
def test_forged_record_headers_are_rejected_without_big_reads(fields):
    data = _resealed_record(fields)
    stream = io.BytesIO(data + b"x" * 64)
    with pytest.raises(FormatError):
        read_record(stream)


@pytest.mark.parametrize("length", [0, 10, 1 << 31, (1 << 32) - 1])
def test_forged_volume_header_lengths_are_rejected(length):
    body = _VOLUME.pack(b"PBKV", 1, 0, length, bytes(16), bytes(16), 1, 0)
    with pytest.raises(FormatError, match="length"):
        read_volume_header(io.BytesIO(body + b"{}" + bytes(4)))


def test_deeply_nested_volume_metadata_is_a_format_error():
    blob = b"[" * 100_000
    length = _VOLUME.size + len(blob) + 4
    body = _VOLUME.pack(b"PBKV", 1, 0, length, bytes(16), bytes(16), 1, 0) + blob
    data = body + zlib.crc32(body).to_bytes(4, "little")
    with pytest.raises(FormatError, match="JSON"):
        read_volume_header(io.BytesIO(data))


def test_corpus_directory_is_in_the_repo():
    assert CORPUS.is_dir()


@pytest.mark.slow
@FUZZ
@given(st.sampled_from(range(8)), st.data())
def test_rebuild_reader_on_mutated_volumes(which, data):
    """rebuild-catalog's reader (with its resync) only notes damage, whatever the bytes."""
    from parbackup.devices.registry import open_device
    from parbackup.engine.volscan import read_volume as _read_volume

    inputs = corpus()
    raw = bytearray(inputs[which % len(inputs)])
    for _ in range(data.draw(st.integers(1, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    dev = open_device("memory://fuzz-rebuild")
    dev.put("sets/x/v.pbv", bytes(raw))
    found: dict = {}
    with contextlib.suppress(FormatError):  # an unreadable volume header: the caller says so
        _read_volume(dev, "ab" * 16, "sets/x/v.pbv", found)  # labels are checked on reading

"""The Reed–Solomon row coder: k data units in, m parity units out, any k of k+m back.

Backed by pyeclib with ISA-L's Cauchy matrix (``isa_l_rs_cauchy``, BSD): a Cauchy matrix
is MDS for every (k, m), unlike ISA-L's Vandermonde one, so *any* k units of a row give
back the other m. ``ALLOWED`` bounds the parameters; tests/redundancy/test_codec.py
decodes every loss combination for every allowed (k, m).

pyeclib frames each fragment with an 80-byte header of its own (index, sizes, backend).
The parity volume stores those headers for every unit of a row (``RowCodec.encode``
returns them), so a data unit read back from its volume is turned into a fragment again
by putting its stored header in front; no data byte is copied into the parity volume.

pyeclib allocates every fragment afresh. On this machine class (a VM that returns freed
pages to its host) every fresh mmap'd page faults expensively: 1 MiB rows encoded at
~80 MB/s instead of ~3 GB/s. ``tune_allocator`` keeps glibc from serving large blocks
with mmap in the process that codes, which restores the speed (measured in bench/).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping, Sequence
from functools import cache

from parbackup.errors import FormatError, UsageError

CODEC = "isa_l_rs_cauchy"
CODEC_IDS = {CODEC: 1}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
MAX_PARITY = 4
MAX_DATA = 16
FRAGMENT_HEADER = 80
"""Bytes of pyeclib's own header in front of every fragment."""


def check_params(k: int, m: int) -> None:
    """UsageError unless (k, m) is allowed: 1 <= m <= MAX_PARITY, 1 <= k <= MAX_DATA."""
    if not 1 <= m <= MAX_PARITY:
        raise UsageError(f"--parity must be between 1 and {MAX_PARITY} (got {m})")
    if not 1 <= k <= MAX_DATA:
        raise UsageError(
            f"parity needs 1 to {MAX_DATA} data devices besides the {m} parity device(s) (got {k})"
        )


@cache
def _driver_class() -> type | None:
    """pyeclib's ``ECDriver``, imported when a row is first coded (not by every module
    that reads or writes parity records: a mover's tee imports this one for its names
    and sizes, ~2 ms a mover); None without the optional "parity" extra."""
    try:
        from pyeclib.ec_iface import ECDriver
    except ImportError:
        return None
    return ECDriver


def _driver(k: int, m: int, codec: str = CODEC):
    """pyeclib's driver for (k, m); UsageError without pyeclib."""
    driver = _driver_class()
    if driver is None:
        raise UsageError("parity needs pyeclib: pip install 'parbackup[parity]'")
    return driver(k=k, m=m, ec_type=codec)


@cache
def tune_allocator() -> None:
    """Serve large blocks from the heap, not fresh mmaps (see the module docstring)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return


def fragment_headers(k: int, m: int, unit: int) -> list[bytes]:
    """The k+m fragment headers of every row of (k, m, unit): they hold no data byte
    (tests/redundancy/test_isal.py checks it), so a row of zeros gives them. Leaves the
    allocator alone (for a process that codes no rows itself)."""
    check_params(k, m)
    fragments = _driver(k, m).encode(bytes(k * unit))
    if len(fragments) != k + m or any(len(f) != FRAGMENT_HEADER + unit for f in fragments):
        raise FormatError(f"{CODEC}: unexpected fragment layout")
    return [bytes(f[:FRAGMENT_HEADER]) for f in fragments]


class RowCodec:
    """Encode and decode the rows of one stripe layout (k data, m parity, ``unit`` bytes)."""

    def __init__(self, k: int, m: int, unit: int, codec: str = CODEC) -> None:
        check_params(k, m)
        if codec not in CODEC_IDS:
            raise FormatError(f"unknown parity codec {codec!r}")
        if unit <= 0 or unit % 64:
            raise FormatError(f"parity unit {unit} is not a positive multiple of 64")
        self.driver = _driver(k, m, codec)
        tune_allocator()
        self.k, self.m, self.unit, self.codec = k, m, unit, codec

    def encode(
        self, units: Sequence[bytes | bytearray | memoryview]
    ) -> tuple[list[bytes], list[bytes]]:
        """The m parity units of a row of k data units (each ``unit`` bytes), and the
        k+m fragment headers the decoder needs."""
        if len(units) != self.k or any(len(u) != self.unit for u in units):
            raise ValueError("a row takes k units of exactly `unit` bytes")
        return self.encode_row(b"".join(units))

    def encode_row(self, row: bytes) -> tuple[list[bytes], list[bytes]]:
        """``encode`` of a row given as its k units back to back (no joining copy)."""
        if len(row) != self.k * self.unit:
            raise ValueError("a row takes k units of exactly `unit` bytes")
        fragments = self.driver.encode(row)
        if len(fragments) != self.k + self.m or any(
            len(f) != FRAGMENT_HEADER + self.unit for f in fragments
        ):
            raise FormatError(f"{self.codec}: unexpected fragment layout")
        headers = [bytes(f[:FRAGMENT_HEADER]) for f in fragments]
        return [bytes(f[FRAGMENT_HEADER:]) for f in fragments[self.k :]], headers

    def decode_data(
        self, present: Mapping[int, bytes | bytearray | memoryview], headers: Sequence[bytes]
    ) -> bytes:
        """The k data units of a row back to back, from any k of its units (as
        ``decode``, without copying the units apart or encoding parity again: a reader
        decoding one lost column holds less)."""
        if len(present) < self.k:
            raise FormatError(
                f"a row needs {self.k} of its {self.k + self.m} units; only {len(present)} left"
            )
        if len(headers) != self.k + self.m:
            raise FormatError("parity record holds the wrong number of fragment headers")
        fragments = [headers[i] + present[i] for i in sorted(present)[: self.k]]
        try:
            whole = self.driver.decode(fragments)
        except Exception as exc:  # pyeclib's own error classes: map at the boundary
            raise FormatError(f"{self.codec}: cannot decode a row: {exc}") from exc
        if len(whole) != self.k * self.unit:
            raise FormatError(f"{self.codec}: a decoded row of the wrong size")
        return whole

    def decode(
        self, present: Mapping[int, bytes | bytearray | memoryview], headers: Sequence[bytes]
    ) -> list[bytes]:
        """All k+m units of a row from any k of them (``present``: index -> unit; data
        units are 0..k-1, parity units k..k+m-1). FormatError with fewer than k."""
        if len(present) < self.k:
            raise FormatError(
                f"a row needs {self.k} of its {self.k + self.m} units; only {len(present)} left"
            )
        if len(headers) != self.k + self.m:
            raise FormatError("parity record holds the wrong number of fragment headers")
        chosen = sorted(present)[: self.k]
        if chosen == list(range(self.k)):
            data = [bytes(present[i]) for i in chosen]
        else:
            fragments = [headers[i] + bytes(present[i]) for i in chosen]
            try:
                whole = self.driver.decode(fragments)
            except Exception as exc:  # pyeclib's own error classes: map at the boundary
                raise FormatError(f"{self.codec}: cannot decode a row: {exc}") from exc
            data = [whole[i * self.unit : (i + 1) * self.unit] for i in range(self.k)]
        parity = [bytes(present[i]) for i in range(self.k, self.k + self.m) if i in present]
        if len(parity) != self.m:
            parity, _ = self.encode(data)
        return data + parity

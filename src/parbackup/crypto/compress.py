"""zstd compression per record, skipped where it does not help.

``--compression`` is ``off``, ``auto`` or a zstd level (1-19):

- every mode that compresses stores a record uncompressed when compressing does not make
  it smaller, so a record never grows;
- ``auto`` is level 1 (the fastest: compression must not slow a backup down), keeps a
  record compressed only when that saves at least 1/32 of it (less is not worth
  decompressing on every restore), and stops trying on a file once one of its records
  did not (media, archives, encrypted data: saves the CPU on the rest of it).

A record of ``THREADED`` bytes or more is compressed by zstd's own worker threads (as
many as the machine has cores, at most ``THREADS``, a ``JOB`` each): the plan shares out
source bytes, not compression work, so one mover may be left with the text while the
others are done with the media; its large records then use the cores the others left
idle. Smaller records are compressed on the mover's own thread (handing them over would
cost more). Either way the same frame format; a reader cannot tell.
"""

from __future__ import annotations

import os

import zstandard

from parbackup.errors import FormatError, UsageError

OFF = -1
AUTO = 0
AUTO_LEVEL = 1
AUTO_MIN_SAVING = 32
"""``auto`` keeps a record compressed only when that saves at least 1/32 of its size."""
MAX_LEVEL = 19
THREADS = 4
THREADED = 1 << 20
JOB = 1 << 20
"""zstd's job per worker thread: a 4 MiB record is 4 jobs (zstd's default job for level
1 is as large as the record: one job, no parallelism at all)."""


def parse_compression(text: str) -> int:
    """``off`` -> OFF, ``auto`` -> AUTO, ``N`` -> N (1..19); UsageError otherwise."""
    text = text.strip().lower()
    if text == "off":
        return OFF
    if text == "auto":
        return AUTO
    try:
        level = int(text)
    except ValueError:
        level = 0
    if not 1 <= level <= MAX_LEVEL:
        raise UsageError(f"--compression must be auto, off or a level 1-{MAX_LEVEL}: {text!r}")
    return level


def describe(mode: int) -> str:
    return {OFF: "off", AUTO: "auto"}.get(mode, str(mode))


class Compressor:
    """Compresses record payloads for one mover (not thread-safe)."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        level = AUTO_LEVEL if mode == AUTO else mode
        self._zc = zstandard.ZstdCompressor(level=level) if mode != OFF else None
        threads = min(THREADS, os.cpu_count() or 1)
        self._zc_large = self._zc
        if self._zc is not None and threads > 1:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=threads, job_size=JOB
            )
            self._zc_large = zstandard.ZstdCompressor(compression_params=params)
        self._skip_file: int | None = None

    def compress(self, data: bytes | memoryview, file_id: int) -> bytes | None:
        """The compressed bytes, or None when the record is better stored as it is."""
        if self._zc is None or len(data) < 64 or file_id == self._skip_file:
            return None
        zc = self._zc_large if len(data) >= THREADED else self._zc
        assert zc is not None
        packed = zc.compress(data)
        if self.mode != AUTO:
            return packed if len(packed) < len(data) else None
        if len(packed) <= len(data) - len(data) // AUTO_MIN_SAVING:
            return packed
        self._skip_file = file_id
        return None


_DC = zstandard.ZstdDecompressor()


def decompress(data: bytes | memoryview, size: int, what: str) -> bytes:
    """Decompress a record payload that must give exactly ``size`` bytes. The size a
    frame claims is checked first: nothing is allocated from an unchecked length."""
    try:
        claimed = zstandard.frame_content_size(data)
        if claimed not in (-1, size):
            raise FormatError(f"{what}: compressed payload claims {claimed} bytes, not {size}")
        out = _DC.decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: damaged compressed payload ({exc})") from exc
    if len(out) != size:
        raise FormatError(f"{what}: compressed payload gives {len(out)} bytes, not {size}")
    return out

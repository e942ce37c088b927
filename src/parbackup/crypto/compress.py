"""zstd compression per record, skipped where it does not help.

``--compression`` is ``off``, ``auto`` or a zstd level (1-19):

- every mode that compresses stores a record uncompressed when compressing does not make
  it smaller, so a record never grows;
- ``auto`` keeps a record compressed only when that saves at least 1/32 of it (less is
  not worth decompressing on every restore), and stops trying on a file once one of its
  records did not (media, archives, encrypted data: saves the CPU on the rest of it);
- ``auto`` picks its level by what holds the mover up (``choose``), decided again every
  ``WINDOW`` source bytes, along ``AUTO_LADDER`` (levels 1, -2, -5, -10, -20, -30):
  a step towards level 1 (``AUTO_LEVEL``, the best ratio) while the device takes longer
  to take the records than zstd takes to compress them (a link, a slow disk: there the
  ratio is the speed, and the CPU waits anyway), a step towards ``AUTO_FAST`` (-30)
  while compressing takes longer (a fast local device: there zstd's CPU is the
  backup's wall time, on a machine whose cores the movers already keep busy, and a
  better ratio buys no speed, only space), two steps while compressing takes more than
  ``LEAP`` times as long as the device (tmpfs, a fast SSD: the first compressible
  windows are not spent at the slow levels). Each step down takes 13-23% off zstd's
  CPU for 10-18% more stored bytes of what compresses (docs/BENCHMARKS.md); the last
  rung still stores what compresses at about 0.7 of its size (ratio 1.38 on the local
  benchmark's compressible files, 2.68 at level 1), so ``auto`` never gives up
  compressing what compresses, it trades ratio for speed only where the ratio buys no
  speed. One step (or a leap) a window, so a device about as fast as zstd moves between
  neighbouring levels rather than between the ends. Data so repetitive that zstd
  compresses it at ``FAST`` bytes a second or more (logs, dumps of like rows) runs about
  as fast at every level, while the ratio falls steeply (level 1 96x, -30 1.24x on lines
  that differ by a number): such a window is no reason to step down, and steps back
  towards level 1 instead. A window in which
  zstd saw less than a quarter of the source bytes (media and random data, given up on
  after one record) leaves the level as it was: writing what was not compressed says
  nothing of what compressing costs, and would pull the level back towards 1 just
  before the next compressible files. The mover tells it how long the device took
  (``Compressor.wrote``); without that it stays at level 1.

Records of ``THREADED`` bytes or more are compressed by zstd's own worker threads (as
many as the machine has cores, at most ``THREADS``, a ``JOB`` each) only while the mover
is held up by compressing *and* a core of the machine is idle (``/proc/stat``): the plan
shares out source bytes, not compression work, so one mover may be left with the text
while the others are done with the media, and its large records then use the cores the
others left idle. While every core is busy, threads would only add their own cost (about
5% more CPU, and a copy of every record). Either way the same frame format; a reader
cannot tell.
"""

from __future__ import annotations

import os
import time

import zstandard

from parbackup.errors import FormatError, UsageError

OFF = -1
AUTO = 0
AUTO_LADDER = (1, -2, -5, -10, -20, -30)
"""``auto``'s levels, best ratio first. On a third of this project's local benchmark
tree (its 692 MB of files other than the random ones, 4 MiB records, one core; session
7): level 1 484 MB/s of CPU, ratio 2.68; -2 609, 2.28; -5 700, 1.98; -10 851, 1.71; -20
1103, 1.52; -30 1314, 1.38 (docs/BENCHMARKS.md). It stops at -30: -50 (1710 MB/s,
1.25) would save only a fifth of what compresses."""
AUTO_LEVEL = AUTO_LADDER[0]
"""``auto``'s level while the device holds the mover up (the best ratio at zstd's speed)."""
AUTO_FAST = AUTO_LADDER[-1]
"""``auto``'s level while compressing keeps holding the mover up."""
LEAP = 4
"""``auto`` steps two levels down in a window in which zstd took more than ``LEAP`` times
as long as the device."""
FAST = 1_400_000_000
"""zstd's speed (bytes a second of CPU, over the records of ``RATE_MIN`` or more it
tried in a window) from which ``auto`` no longer steps down: on this machine level 1
ran lines that differ by a number at 1.5-2.0 GB/s and every lower level at 1.8-2.2,
while the local benchmark's compressible files ran at 0.48 (level 1) to 1.0 (-20) and
1.3 GB/s (-30), some windows faster, so on those ``auto`` moves between -20 and -30
(at 1.2 GB/s it went up as far as -5 at times; docs/BENCHMARKS.md, session 7)."""
RATE_MIN = 256 << 10
"""Records of this size or more tell zstd's speed (``FAST``), by the CPU time of the
mover's process (zstd's worker threads included; a clock read per record, so the small
ones, whose speed says little, are left out)."""
WINDOW = 32 << 20
"""Source bytes between two of ``auto``'s decisions."""
IDLE_EVERY = 0.25
"""Seconds at least between two looks at the machine's idle time."""
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


def choose(
    compressing: float, writing: float, idle: float, rate: float = 0.0, fast: float = FAST
) -> tuple[int, bool]:
    """(steps along ``AUTO_LADDER`` for the next window: +1 or +2 towards the faster
    levels, -1 back towards level 1; worker threads?) from the seconds spent compressing
    and handing records to the device in the last window, the idle cores of the machine
    meanwhile, and zstd's speed over what it tried (``rate``, bytes a second): at ``fast``
    or more every level runs alike, so the best ratio costs nothing. Pure."""
    held_by_cpu = compressing > writing
    threads = held_by_cpu and idle >= 0.5
    if not held_by_cpu or rate >= fast:
        return -1, threads
    return (2 if compressing > LEAP * writing else 1), threads


def cpu_times() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all cores since boot, or None where /proc/stat is
    not to be had."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if len(fields) < 6 or fields[0] != b"cpu":
        return None
    ticks = [int(f) for f in fields[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


def idle_cores(before: tuple[int, int], after: tuple[int, int], cpus: int) -> float:
    """How many cores were idle on average between two ``cpu_times``."""
    total = after[1] - before[1]
    return cpus * (after[0] - before[0]) / total if total > 0 else 0.0


class Compressor:
    """Compresses record payloads for one mover (not thread-safe)."""

    def __init__(self, mode: int, fast: float = FAST) -> None:
        self.mode = mode
        self.fast = fast
        """zstd's speed from which ``auto`` steps no further down (``FAST``)."""
        self.level = AUTO_LEVEL if mode == AUTO else mode
        self._rung = 0
        """Where ``auto`` stands on ``AUTO_LADDER``."""
        levels = AUTO_LADDER if mode == AUTO else (mode,)
        self._zc = (
            {lvl: zstandard.ZstdCompressor(level=lvl) for lvl in levels} if mode != OFF else {}
        )
        self._zc_threaded: dict[int, zstandard.ZstdCompressor] = {}
        self.cores = os.cpu_count() or 1
        self.threaded = False
        """Large records go to zstd's worker threads (see the module docstring)."""
        self._skip_file: int | None = None
        self._compressing = self._writing = 0.0
        self._window = self._tried = 0
        self._rate_cpu, self._rate_bytes = 0.0, 0
        self._idle_at = time.monotonic()
        self._idle_mark = cpu_times()
        self._idle = 0.0

    def compress(self, data: bytes | memoryview, file_id: int) -> bytes | None:
        """The compressed bytes, or None when the record is better stored as it is."""
        if not self._zc or len(data) < 64 or file_id == self._skip_file:
            return None
        if self.threaded and len(data) >= THREADED:
            zc = self._threaded(self.level)
        else:
            zc = self._zc[self.level]
        started = time.perf_counter()
        if len(data) >= RATE_MIN:  # zstd's speed by its CPU time, whatever the load
            cpu = time.process_time()
            packed = zc.compress(data)
            self._rate_cpu += time.process_time() - cpu
            self._rate_bytes += len(data)
        else:
            packed = zc.compress(data)
        self._compressing += time.perf_counter() - started
        self._tried += len(data)
        if self.mode != AUTO:
            return packed if len(packed) < len(data) else None
        if len(packed) <= len(data) - len(data) // AUTO_MIN_SAVING:
            return packed
        self._skip_file = file_id
        return None

    def _threaded(self, level: int) -> zstandard.ZstdCompressor:
        zc = self._zc_threaded.get(level)
        if zc is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=min(THREADS, self.cores), job_size=JOB
            )
            zc = self._zc_threaded[level] = zstandard.ZstdCompressor(compression_params=params)
        return zc

    def wrote(self, seconds: float, size: int) -> None:
        """The device took ``seconds`` to take a record of ``size`` source bytes; every
        ``WINDOW`` bytes the level and the threads are chosen anew (``choose``)."""
        if not self._zc:  # nothing to choose with compression off
            return
        self._writing += seconds
        self._window += size
        if self._window < WINDOW:
            return
        if self._tried * 4 >= self._window:  # else: mostly skipped, nothing to learn
            rate = self._rate_bytes / self._rate_cpu if self._rate_cpu > 0 else 0.0
            step, threads = choose(
                self._compressing, self._writing, self._look_idle(), rate, self.fast
            )
            if self.mode == AUTO:
                self._rung = min(max(self._rung + step, 0), len(AUTO_LADDER) - 1)
                self.level = AUTO_LADDER[self._rung]
            self.threaded = threads and self.cores > 1
        self._compressing = self._writing = 0.0
        self._window = self._tried = 0
        self._rate_cpu, self._rate_bytes = 0.0, 0

    def _look_idle(self) -> float:
        """Idle cores since the last look (looked at most every ``IDLE_EVERY`` s)."""
        now = time.monotonic()
        if now - self._idle_at >= IDLE_EVERY and self._idle_mark is not None:
            mark = cpu_times()
            if mark is not None:
                self._idle = idle_cores(self._idle_mark, mark, self.cores)
                self._idle_mark, self._idle_at = mark, now
        return self._idle


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

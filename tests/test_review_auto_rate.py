"""``auto``'s FAST rule is fed by zstd's speed as the Compressor measures it (review of
session 7): the crypto branch's tests give ``fast=0`` or ``fast=inf``, which decide the
rule whatever speed was measured, so a speed never measured (always 0) passed them.
Here ``fast`` is one byte a second: real zstd on real records passes it only when the
speed was measured, and only records of ``RATE_MIN`` or more are measured."""

from __future__ import annotations

from parbackup.crypto.compress import AUTO, AUTO_LADDER, AUTO_LEVEL, RATE_MIN, WINDOW, Compressor

TEXT = b"".join(b"record line %d, to compress\n" % i for i in range(40_000))


def _window(auto: Compressor, record: int) -> None:
    """One window of ``TEXT`` in records of ``record`` bytes, zstd seeing a quarter of
    it, on a device that takes no time (zstd is the slower part: a step down unless the
    measured speed vetoes it)."""
    chunks = [TEXT[i : i + record] for i in range(0, len(TEXT), record)]
    seen = 0
    while seen < WINDOW // 4:
        for chunk in chunks:
            assert auto.compress(chunk, 1) is not None
            seen += len(chunk)
    auto.wrote(0.0, WINDOW)


def test_a_measured_speed_keeps_level_1_on_large_records() -> None:
    assert len(TEXT) >= RATE_MIN
    auto = Compressor(AUTO, fast=1.0)
    for _ in range(2):
        _window(auto, len(TEXT))
        assert auto.level == AUTO_LEVEL


def test_small_records_tell_no_speed_and_auto_steps_down() -> None:
    auto = Compressor(AUTO, fast=1.0)
    _window(auto, RATE_MIN // 4)
    assert auto.level in AUTO_LADDER[1:]

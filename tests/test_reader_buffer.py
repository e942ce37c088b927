"""The reader's span buffer (readback/reader.py): growing it never holds the old and
the new one at once (each healthy reader's peak RSS was 10 MB higher for it)."""

from __future__ import annotations

import tracemalloc

from parbackup.readback.reader import _Buffer


def test_the_span_buffer_lets_the_old_one_go_before_it_grows() -> None:
    buf = _Buffer(16 << 20)
    tracemalloc.start()
    try:
        assert len(buf.fit(8 << 20)) == 8 << 20
        tracemalloc.reset_peak()
        assert len(buf.fit(12 << 20)) == 16 << 20  # doubled, up to the cap
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (17 << 20), peak
    assert len(buf.fit(32 << 20)) == 16 << 20  # past the cap: the caller reads anew

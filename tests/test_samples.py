"""Progress samples (engine/samples.py): every event goes on, the samples stay bounded,
the last count of every device and every failure are kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from oldcatalog import sqlite_to_schema_4
from parbackup.catalog import Catalog
from parbackup.catalog.schema import SCHEMA_VERSION
from parbackup.engine.reportpage import render_report
from parbackup.engine.samples import ProgressSampler
from parbackup.progress import DeviceBytes, DeviceFailed, Event, Notice, Started


class Clock:
    """A clock the test moves (the sampler's time source, passed in)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_samples_stay_bounded_and_keep_the_final_counts_and_failures() -> None:
    seen: list[Event] = []
    clock = Clock()
    sampler = ProgressSampler(seen.append, clock=clock, limit=16)
    sampler(Started("backup", 3, 0, ("a", "b"), ()))
    events: list[Event] = []
    for i in range(5000):
        clock.now += 0.01
        events.append(DeviceBytes("a", 10))
        sampler(events[-1])
        if i < 2000:
            events.append(DeviceBytes("b", 7))
            sampler(events[-1])
        if i == 1999:
            events.append(DeviceFailed("b", "gone", 1234))
            sampler(events[-1])
    sampler(Notice("done"))
    assert seen == [Started("backup", 3, 0, ("a", "b"), ()), *events, Notice("done")]
    rows = sampler.finish()
    per = {d: [s for s in rows if s.device == d and s.event == "bytes"] for d in "ab"}
    assert all(len(points) <= 17 for points in per.values())  # limit, + the closing one
    assert len(per["a"]) >= 8  # thinned, not emptied
    assert per["a"][-1].bytes == 50_000 and per["b"][-1].bytes == 14_000
    assert per["a"][0].bytes == 0 and per["a"][0].seconds == 0.0  # from the start
    times = [s.seconds for s in per["a"]]
    assert times == sorted(times) and times[-1] == 50.0
    counts = [s.bytes for s in per["a"]]
    assert counts == sorted(counts)  # a cumulative count never goes back
    (failure,) = [s for s in rows if s.event == "failed"]
    assert (failure.device, failure.bytes, failure.redirected) == ("b", 14_000, 1234)
    assert failure.seconds == 20.0


def test_a_schema_3_catalog_gains_the_progress_table_and_old_sets_draw_without_samples(
    tmp_path: Path,
) -> None:
    """Samples came with schema 4: an older catalog opens, migrates, and its sets (which
    have no samples) still get a page."""
    path = tmp_path / "v3.sqlite"
    with Catalog(str(path)) as c:
        c.begin_set("ab" * 16, strategy="fill", order="desc", threshold=1, sources=["/s"])
        c.finish_set("ab" * 16, status="complete", files=0, nbytes=0, report={}, devices=[])
    sqlite_to_schema_4(str(path))
    db = sqlite3.connect(path)
    db.execute("DROP TABLE progress")
    db.execute("UPDATE meta SET value='3' WHERE key='schema'")
    db.commit()
    db.close()
    with Catalog(str(path), create=False) as c:
        assert c.meta("schema") == str(SCHEMA_VERSION) == "5"
        assert c.progress("ab" * 16) == []
        assert "No progress samples" in render_report(c, "latest").html
        c.add_progress("ab" * 16, [(0.5, "/d1", 10, "bytes", 0), (0.7, "/d1", 10, "failed", 5)])
        assert c.progress("ab" * 16) == [
            (0.5, "/d1", 10, "bytes", 0),
            (0.7, "/d1", 10, "failed", 5),
        ]

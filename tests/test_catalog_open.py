"""Several processes opening one brand-new catalog at the same instant all succeed.

Regression: switching a new SQLite file to WAL does not wait on the busy timeout, so a
second backup started together with the first failed with "database is locked" before
it ever reached the run lock (about one round in four of this test failed).
"""

from __future__ import annotations

import multiprocessing as mp

import pytest

from parbackup.catalog import Catalog


def _open(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        Catalog(path).close()
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


@pytest.mark.slow
def test_simultaneous_opens_of_a_new_catalog(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(20):
        path = str(tmp_path / f"c{round_}.sqlite")
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        got = [results.get(timeout=5) for _ in procs]
        assert got == ["ok"] * 3, got

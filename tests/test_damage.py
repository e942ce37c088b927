"""Damage on a device: verify and restore find any flipped, cut, missing or extra byte."""

from __future__ import annotations

import gc
import os
import random
import shutil
import socket
import threading
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from conftest import make_tree, restored_root, snapshot
from parbackup.catalog import Catalog
from parbackup.engine.backup import run_backup
from parbackup.format import RECORD_FIXED_SIZE, read_volume_header
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.verify import run_verify
from parbackup.workers import Outbox, SendsThroughOutbox, serve


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """A small tree backed up onto two directories; returns (tree, devices, catalog path)."""
    base = tmp_path_factory.mktemp("damage")
    tree = make_tree(base / "src", seed=7, files=12, max_size=3000)
    devs = [base / "d0", base / "d1"]
    for d in devs:
        d.mkdir()
    cat = str(base / "cat.sqlite")
    with Catalog(cat) as catalog:
        report = run_backup([str(tree)], [str(d) for d in devs], catalog)
    assert report.status == "complete"
    return tree, devs, cat


def volumes(devs: list[Path]) -> list[Path]:
    return sorted(p for d in devs for p in d.glob("sets/*/*.pbv"))


def verify_damaged(cat: str) -> list[dict]:
    with Catalog(cat) as catalog:
        return run_verify(catalog).damaged


def record_starts(vol: Path) -> list[int]:
    """Byte positions of the record headers of a volume (from the volume itself)."""
    with open(vol, "rb") as fh:
        pos = read_volume_header(fh).length
    data = vol.read_bytes()
    out = []
    while pos < len(data):
        out.append(pos)
        plen, llen = (int.from_bytes(data[pos + i : pos + i + 4], "little") for i in (116, 120))
        size = int.from_bytes(data[pos + 44 : pos + 52], "little")
        size = 0 if data[pos + 6] == 15 else size
        pos += RECORD_FIXED_SIZE + plen + llen + 4 + size
    assert pos == len(data)
    return out


@contextmanager
def damaged(vol: Path, content: bytes | None):
    """``vol`` holds ``content`` (None: it is gone) for the block; then it is put back."""
    original = vol.read_bytes()
    if content is None:
        vol.unlink()
    else:
        vol.write_bytes(content)
    try:
        yield original
    finally:
        vol.write_bytes(original)


def test_clean_set_verifies(backed_up):
    assert verify_damaged(backed_up[2]) == []


class ThreadExecutor:
    """Readers in threads of this process, not in processes: the reader code is the same
    (``workers.serve`` runs it over a socket pair, as in a process), and a verify then
    costs milliseconds, not the tens of milliseconds of starting reader processes. For
    the test that verifies a thousand damaged copies; every other test here uses the
    default executor (real reader processes)."""

    def start(self, target: str, spec, name: str = "", host: str = "") -> ThreadWorker:
        parent, child = socket.socketpair()
        thread = threading.Thread(
            target=serve, args=(target, Connection(child.detach())), daemon=True
        )
        worker = ThreadWorker(name or target, thread, Connection(parent.detach()))
        worker.channel.send(spec)
        thread.start()
        return worker


class ThreadWorker(SendsThroughOutbox):
    """A reader running in a thread (the ``Worker`` contract of parbackup.workers)."""

    def __init__(self, name: str, thread: threading.Thread, channel: Connection) -> None:
        self.name, self.thread, self.channel = name, thread, channel
        self.outbox = Outbox(channel, name)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def kill(self) -> None:
        self.outbox.close()  # closes the channel: the reader's next message ends it

    def why_ended(self, role: str) -> str:
        return f"its {role} thread ended unexpectedly"

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        if self.thread.is_alive():
            return False
        self.outbox.close()
        return True


def record_path(data: bytes, starts: list[int], pos: int) -> bytes | None:
    """The path in the record holding byte ``pos``; None in the volume header or end record."""
    s = max((s for s in starts if s <= pos), default=None)
    if s is None or s == starts[-1]:
        return None
    plen = int.from_bytes(data[s + 116 : s + 120], "little")
    return data[s + RECORD_FIXED_SIZE : s + RECORD_FIXED_SIZE + plen]


@pytest.mark.slow
def test_one_flipped_byte_anywhere_is_found(backed_up):
    """Every byte of the volume header, of two record headers and of the end record;
    seeded samples of every other header and of the payloads.

    Each verify checks one flip in each of the two volumes at once (they lie on different
    devices, read by different readers) and must name exactly the flipped devices: so
    each flip is found on its own, never thanks to the other. Two flips in records of the
    same file (a file split over both devices) are verified one at a time, as verify
    names a damaged file once."""
    _, devs, cat = backed_up
    rng = random.Random(5)
    originals: list[tuple[Path, bytes]] = []
    flips: list[list[tuple[int, int, bytes | None]]] = []  # per volume: position, bit, file
    for vol in volumes(devs):
        data = vol.read_bytes()
        starts = record_starts(vol)
        positions = set(range(0, starts[0]))  # the volume header
        for n, s in enumerate(starts):
            header = range(s, min(s + RECORD_FIXED_SIZE + 40, len(data)))
            if n < 2:  # every byte of two whole headers, so every field is hit
                positions.update(header)
            else:
                positions.update(rng.sample(header, 12))
        positions.update(rng.randrange(len(data)) for _ in range(150))
        positions.update(range(len(data) - 140, len(data)))  # the end record
        originals.append((vol, data))
        flips.append(
            [(p, rng.randrange(8), record_path(data, starts, p)) for p in sorted(positions)]
        )
    assert len(originals) == 2 and devs[0] != devs[1]
    runs: list[dict[int, tuple[int, int]]] = []  # volume index -> (position, bit)
    for i in range(max(map(len, flips))):
        now = {v: f[i] for v, f in enumerate(flips) if i < len(f)}
        files = [file for _, _, file in now.values()]
        if len(files) == 2 and files[0] is not None and files[0] == files[1]:
            runs.extend({v: (pos, bit)} for v, (pos, bit, _) in now.items())
        else:
            runs.append({v: (pos, bit) for v, (pos, bit, _) in now.items()})
    executor = ThreadExecutor()
    try:
        with Catalog(cat) as catalog:
            for run in runs:
                for v, (vol, original) in enumerate(originals):
                    data = bytearray(original)
                    if v in run:
                        pos, bit = run[v]
                        data[pos] ^= 1 << bit
                    vol.write_bytes(data)
                found = run_verify(catalog, executor=executor).damaged
                flipped = {
                    str(originals[v][0].parents[2]): f"flip at {pos}" for v, (pos, _) in run.items()
                }
                assert {d["device"] for d in found} == set(flipped), (flipped, found)
    finally:
        gc.unfreeze()  # a reader freezes its heap (gc.freeze); here that heap is ours
        for vol, original in originals:
            vol.write_bytes(original)
    assert verify_damaged(cat) == []  # real reader processes: the volumes are whole again
    checked = sum(map(len, runs))
    print(f"{checked} single-bit flips in {len(runs)} verifies, each flip found")


@pytest.mark.parametrize("cut", [1, 10, 500, 5000])
def test_truncated_volume_is_found(backed_up, cut):
    _, devs, cat = backed_up
    for vol in volumes(devs):
        data = vol.read_bytes()
        with damaged(vol, data[: max(0, len(data) - cut)]):
            assert verify_damaged(cat)


def test_appended_garbage_is_found(backed_up):
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    with damaged(vol, vol.read_bytes() + b"\0"):
        assert any("longer" in d["error"] for d in verify_damaged(cat))


def test_missing_record_is_found(backed_up):
    """Cut one whole record out of the middle of a volume."""
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    a, b = starts[1], starts[2]
    with damaged(vol, data[:a] + data[b:]):
        assert verify_damaged(cat)


def test_missing_volume_is_found(backed_up):
    _, devs, cat = backed_up
    with damaged(volumes(devs)[1], None):
        found = verify_damaged(cat)
        assert found and all(d["error"] for d in found)


def test_restore_refuses_a_damaged_file_and_restores_the_rest(backed_up, tmp_path):
    tree, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = bytearray(vol.read_bytes())
    starts = record_starts(vol)
    # flip a payload byte of the first record that has one
    for s in starts:
        size = int.from_bytes(data[s + 44 : s + 52], "little")
        if size and data[s + 6] == 1:
            plen, llen = (int.from_bytes(data[s + i : s + i + 4], "little") for i in (116, 120))
            pos = s + RECORD_FIXED_SIZE + plen + llen + 4 + size // 2
            path = os.fsdecode(bytes(data[s + RECORD_FIXED_SIZE : s + RECORD_FIXED_SIZE + plen]))
            break
    data[pos] ^= 0x40
    with damaged(vol, bytes(data)), Catalog(cat) as catalog:
        report = run_restore(catalog, RestoreOptions(target=str(tmp_path / "out")))
    assert [d["path"] for d in report.damaged] == [path]
    assert "checksum" in report.damaged[0]["error"]
    got = snapshot(restored_root(tmp_path / "out", tree))
    want = snapshot(tree)
    rel = os.path.relpath(path, tree)
    assert rel not in got
    # the rest is whole; parent dir modes differ only because restore of dirs still ran
    del want[rel]
    assert got == want
    shutil.rmtree(tmp_path / "out")


def test_inserted_byte_is_found(backed_up):
    _, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    at = starts[len(starts) // 2] + 3
    with damaged(vol, data[:at] + b"\x00" + data[at:]):
        assert verify_damaged(cat)


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_restore_names_files_of_a_cut_or_missing_volume(backed_up, tmp_path, how):
    tree, devs, cat = backed_up
    vol = volumes(devs)[0]
    data = vol.read_bytes()
    starts = record_starts(vol)
    cut = starts[len(starts) // 2]
    if how == "truncated":
        vol.write_bytes(data[:cut])
    else:
        vol.unlink()
    try:
        with Catalog(cat) as catalog:
            report = run_restore(catalog, RestoreOptions(target=str(tmp_path / "out")))
    finally:
        vol.write_bytes(data)
    assert report.damaged
    lost = {os.path.relpath(d["path"], tree) for d in report.damaged}
    got = snapshot(restored_root(tmp_path / "out", tree))
    want = snapshot(tree)
    assert not lost & set(got)
    assert {k: v for k, v in want.items() if k not in lost} == got

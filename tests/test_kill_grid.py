"""SIGKILL at seeded moments of every command, on every remote kind of device (issue 11).

On an SFTP host (real sshd), an S3 bucket (moto's server) and tape images, each beside a
directory device, real ``parbackup`` processes are killed with SIGKILL in the middle of
their work: ``backup`` (mid-volume), ``restore`` and ``verify`` (mid-read),
``forget --prune`` (inside a compaction), ``prune --orphans`` (about to delete),
``rebuild-catalog`` (mid-read) and ``repair`` (mid-write onto the new device). The
moment is seeded: the ``faulty+`` wrapper stops the run after a seeded number of volume
bytes written or read (``pause_after``, ``pause_read``) or at its first deletion
(``pause_delete``) and says so through a FIFO; the test then kills it.

After every kill: the catalog passes SQLite's integrity check, no set is called complete
that was not, every restorable set verifies and the newest restores byte for byte; the
next run of the same command finishes the job and cleans what the killed one left (open
multipart uploads, ``*.tmp-*`` files, half-written volumes, a ``.partial`` catalog, a
half-repaired device), so that the devices then hold nothing no live set needs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import SRC, restored_root, run_cli, snapshot
from killpoints import END_SIZE, pause_point, wait_paused
from parbackup.catalog import Catalog
from parbackup.catalog.liveness import FRAMING_SLACK, set_of_volume
from parbackup.devices.registry import open_device
from parbackup.format import read_volume_header
from parbackup.readback.restore import RestoreOptions, run_restore
from parbackup.readback.verify import run_verify
from test_forget import change_files, make_week_tree

pytestmark = pytest.mark.slow

RESTORABLE = ("complete", "degraded")


@dataclass
class Remote:
    """The kind under test: how to make a device of it and what it holds unfinished."""

    kind: str
    fresh: Callable[[str], str]  # a new, empty device of this kind, named by a word
    unfinished: Callable[[], list[str]]  # open uploads, *.tmp-* files: writes never done
    urls: list[str] = field(default_factory=list)  # every device of this kind made

    def new(self, name: str) -> str:
        url = self.fresh(name)
        self.urls.append(url)
        return url


@pytest.fixture
def remote(tmp_path, request) -> Remote:
    kind = request.param
    if kind == "sftp":
        server = request.getfixturevalue("sshd")
        root = tmp_path / "host"

        def fresh(name: str) -> str:
            (root / name).mkdir(parents=True)
            return server.url(root / name)

        return Remote(kind, fresh, lambda: [str(p) for p in root.rglob("*.tmp-*")])
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = server.bucket("kill-grid")
        client = server.client()
        prefix = tmp_path.name.replace("_", "-")[-30:]

        def uploads() -> list[str]:
            found = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
            return [u["Key"] for u in found.get("Uploads", [])]

        return Remote(kind, lambda name: server.url(bucket, f"{prefix}/{name}"), uploads)
    images = tmp_path / "tapes"
    images.mkdir()
    return Remote(kind, lambda name: f"tape://{images / name}.img", lambda: [])


def faulty(url: str, fault: str, gate: Path) -> str:
    if url.startswith("/"):
        url = f"file://{url}"
    sep = "&" if "?" in url else "?"
    return f"faulty+{url}{sep}{fault}&gate={gate}"


class Killer:
    """Runs parbackup commands and kills them where their faulty device pauses."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.n = 0

    def gate(self) -> Path:
        self.n += 1
        return self.tmp_path / f"gate{self.n}"

    def kill_at(self, gate: Path, *args: str) -> None:
        """Run ``parbackup ARGS``; SIGKILL it once a device opened with ``gate`` paused."""
        fifo = pause_point(gate)
        proc = subprocess.Popen(
            [sys.executable, "-m", "parbackup", *args],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            paused = wait_paused(proc, fifo)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert paused, f"{args[0]} ended before its kill point: {err}"


def dargs(urls: list[str]) -> list[str]:
    return [a for u in urls for a in ("-d", u)]


def assert_sound(cat: str, complete: set[str], want: dict[str, dict], tree: Path, out: Path):
    """The invariants after a kill: integrity, no false complete, every restorable set
    verifies, and the newest restorable set restores byte for byte."""
    with sqlite3.connect(cat) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Catalog(cat, create=False) as catalog:
        status = {s.id: s.status for s in catalog.sets()}
        restorable = [s for s, st in status.items() if st in RESTORABLE]
        assert set(restorable) <= complete, status  # nothing complete that was not
        for set_id in restorable:
            report = run_verify(catalog, set_id)
            assert report.damaged == [], (set_id, report.damaged)
        newest = restorable[-1]
        shutil.rmtree(out, ignore_errors=True)
        report = run_restore(catalog, RestoreOptions(target=str(out), set_ref=newest))
        assert report.damaged == []
    assert snapshot(restored_root(out, tree)) == want[newest]
    return status


def garbage(urls: list[str], cat: str) -> dict[str, int]:
    """'url volume' -> bytes no live set needs (beyond a volume's framing), on any kind of
    device, read through the device interface; independent of prune's own plan."""
    with Catalog(cat, create=False) as catalog:
        roots = catalog.root_ids()
        whole = roots | catalog.pinned_ids()
        live: dict[tuple[str, str], int] = {}
        for set_id in roots:
            seen = set()
            for _fid, ref in catalog.records(set_id):
                if (ref.label, ref.volume, ref.position) not in seen:
                    seen.add((ref.label, ref.volume, ref.position))
                    key = (ref.label, ref.volume)
                    live[key] = live.get(key, 0) + ref.header_size + ref.size
    out = {}
    for url in urls:
        dev = open_device(url)
        dev.open(write=False)
        try:
            label = dev.read_label()
            for info in dev.list("sets/"):
                if set_of_volume(info.name) in whole:
                    continue
                used = live.get((label.label if label else "", info.name), 0)
                if used:
                    with dev.open_read(info.name) as fh:
                        used += read_volume_header(fh).length + END_SIZE
                if info.size - used > (FRAMING_SLACK if used else 0):
                    out[f"{url} {info.name}"] = info.size - used
        finally:
            dev.close()
    return out


def change(tree: Path, step: int) -> None:
    """Rewrite a third of the files (nine), so an incremental backup has ~0.4 MiB to
    write on each of two devices."""
    for night in range(3 * step - 2, 3 * step + 1):
        change_files(tree, night)


def no_part_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".part" in p.name]


@pytest.mark.parametrize("remote", ["sftp", "s3", "tape"], indirect=True)
def test_sigkill_in_every_command_on_every_remote_kind(tmp_path, remote):
    rng = random.Random(f"kill-grid-{remote.kind}")
    tape = remote.kind == "tape"
    tree = make_week_tree(tmp_path / "src")
    disk = tmp_path / "disk"
    disk.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    check = tmp_path / "check"
    kill = Killer(tmp_path)
    want: dict[str, dict] = {}
    complete: set[str] = set()

    def backup(*extra: str, devices: list[str] | None = None) -> str:
        devs = devices or [remote.new("a") if tape else remote.urls[0], str(disk)]
        r = run_cli(
            "backup", str(tree), *dargs(devs), "--catalog", cat, "--incremental", "--json",
            *extra,
        )  # fmt: skip
        assert r.code == 0, r.out + r.err
        want[r.json["set"]] = snapshot(tree)
        complete.add(r.json["set"])
        return r.json["set"]

    # a first set, then the tree changes and a backup is killed mid-volume
    first_url = remote.new("t0" if tape else "dev")
    first = backup(devices=[first_url, str(disk)])
    change(tree, 1)
    gate = kill.gate()
    target = remote.new("t1") if tape else first_url
    at = rng.randrange(16 << 10, 256 << 10)
    kill.kill_at(
        gate, "backup", str(tree), "--incremental", "--catalog", cat,
        *dargs([faulty(target, f"pause_after={at}", gate), str(disk)]),
    )  # fmt: skip
    status = assert_sound(cat, complete, want, tree, check)
    assert status[first] == "complete" and len(status) == 2, status
    # (on S3 nothing is uploaded before a part fills: tests/test_killed_uploads.py kills
    # a run with an upload open)

    # the next backup completes and cleans what the killed one left on the device
    second = backup()
    assert remote.unfinished() == []
    assert_sound(cat, complete, want, tree, check)

    # restore killed mid-read: nothing changes; the next restore into the same target
    # is whole and leaves no .part file
    newest_url = remote.urls[-1]
    target_dir = tmp_path / "restored"
    gate = kill.gate()
    at = rng.randrange(1, 512 << 10)
    kill.kill_at(
        gate, "restore", "--target", str(target_dir), "--catalog", cat,
        *dargs([faulty(newest_url, f"pause_read={at}", gate)]),
    )  # fmt: skip
    assert_sound(cat, complete, want, tree, check)
    # what the killed restore left under a file's own name is that file, whole
    left = restored_root(target_dir, tree)
    for path, entry in snapshot(left).items():
        if entry[0] == "file" and ".part" not in path:
            assert entry[3] == want[second][path][3], path
    r = run_cli("restore", "--overwrite", "--target", str(target_dir), "--catalog", cat)
    assert r.code == 0, r.out + r.err
    assert snapshot(restored_root(target_dir, tree)) == want[second]
    assert no_part_files(target_dir)

    # verify killed mid-read: nothing changes
    gate = kill.gate()
    kill.kill_at(
        gate, "verify", "--catalog", cat,
        *dargs([faulty(newest_url, f"pause_read={rng.randrange(1, 512 << 10)}", gate)]),
    )  # fmt: skip
    assert_sound(cat, complete, want, tree, check)

    # forget --prune killed inside a compaction (the first set's volumes are partly
    # read by the second, incremental one); on tape prune compacts the directory only
    gate = kill.gate()
    compacting = str(disk) if tape else newest_url
    at = rng.randrange(0, 256 << 10)
    kill.kill_at(
        gate, "forget", "--keep-last", "1", "--prune", "--catalog", cat,
        *dargs([faulty(compacting, f"pause_after={at}", gate)]),
    )  # fmt: skip
    status = assert_sound(cat, complete, want, tree, check)
    assert status[first] == "forgotten" and status[second] == "complete", status
    complete.discard(first)
    r = run_cli("prune", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert remote.unfinished() == []
    kept = [u for u in [*remote.urls, str(disk)] if not u.startswith("tape:")]
    assert garbage(kept, cat) == {}
    assert_sound(cat, complete, want, tree, check)

    # a backup killed again, then prune --orphans killed at its first deletion; the next
    # prune --orphans removes every trace of the dead runs. The kill comes mid-volume on
    # the disk, so the disk surely holds the dead run's bytes for prune to pause on (killed
    # at a point on the remote, the disk's mover had sometimes written nothing yet)
    change(tree, 2)
    gate = kill.gate()
    target = remote.new("t2") if tape else newest_url
    kill.kill_at(
        gate, "backup", str(tree), "--incremental", "--catalog", cat,
        *dargs([target,
                faulty(str(disk), f"pause_after={rng.randrange(16 << 10, 256 << 10)}", gate)]),
    )  # fmt: skip
    assert_sound(cat, complete, want, tree, check)
    gate = kill.gate()
    kill.kill_at(
        gate, "prune", "--orphans", "--catalog", cat,
        *dargs([faulty(str(disk), "pause_delete=1", gate)]),
    )  # fmt: skip
    assert_sound(cat, complete, want, tree, check)
    r = run_cli("prune", "--orphans", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert remote.unfinished() == []
    assert garbage(kept, cat) == {}
    status = assert_sound(cat, complete, want, tree, check)

    # rebuild-catalog killed mid-read leaves no catalog; the next one rebuilds it whole
    rebuilt = str(tmp_path / "rebuilt.sqlite")
    live_urls = [u for u in remote.urls if not tape or u == remote.urls[-2]] + [str(disk)]
    gate = kill.gate()
    kill.kill_at(
        gate, "rebuild-catalog", "--catalog", rebuilt,
        *dargs([faulty(live_urls[0], f"pause_read={rng.randrange(1, 256 << 10)}", gate),
                *live_urls[1:]]),
    )  # fmt: skip
    assert not os.path.exists(rebuilt)
    r = run_cli("rebuild-catalog", "--catalog", rebuilt, "--json", *dargs(live_urls))
    assert r.code in (0, 3), r.out + r.err
    out = tmp_path / "from-rebuilt"
    r = run_cli("restore", "--set", second, "--target", str(out), "--catalog", rebuilt)
    # a rebuilt incremental set lists only the files it wrote (engine/rebuild.py), and
    # its restore says so rather than calling the tree whole
    assert r.code == 3 and "restore its parent set" in r.out + r.err, r.out + r.err
    got = {p: e for p, e in snapshot(restored_root(out, tree)).items() if e[0] == "file"}
    assert got and all(e[3] == want[second][p][3] for p, e in got.items())


@pytest.mark.parametrize("remote", ["sftp", "s3", "tape"], indirect=True)
def test_sigkill_during_repair_onto_every_remote_kind(tmp_path, remote):
    """A repair killed while it writes the lost device's volumes onto a new device of
    each kind: the set stays recoverable and restores whole; the next repair onto the
    same half-written device rebuilds it, and the set is then whole without the lost
    device."""
    tree = make_week_tree(tmp_path / "src")
    devs = [tmp_path / f"d{i}" for i in range(3)]
    for d in devs:
        d.mkdir()
    cat = str(tmp_path / "cat.sqlite")
    r = run_cli(
        "backup", str(tree), *dargs([str(d) for d in devs]), "--parity", "1",
        "--catalog", cat, "--json",
    )  # fmt: skip
    assert r.code == 0, r.out + r.err
    set_id = r.json["set"]
    want = {set_id: snapshot(tree)}
    shutil.rmtree(devs[0])  # a data device is lost
    new = remote.new("new")
    gate = tmp_path / "gate"
    at = random.Random(f"repair-{remote.kind}").randrange(16 << 10, 512 << 10)
    Killer(tmp_path).kill_at(
        gate, "repair", "--set", set_id, "--catalog", cat,
        "--device", faulty(new, f"pause_after={at}", gate),
    )  # fmt: skip
    assert_sound(cat, {set_id}, want, tree, tmp_path / "check")
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 3 and r.json["status"] == "recoverable", r.out + r.err
    r = run_cli("repair", "--set", set_id, "--device", new, "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert remote.unfinished() == []
    r = run_cli("verify", "--catalog", cat, "--json")
    assert r.code == 0, r.out + r.err
    assert_sound(cat, {set_id}, want, tree, tmp_path / "check")

"""Each speed target's limit on this machine, next to the measured ratio, in one run.

    .venv/bin/python bench/limits.py --work /tmp/NAME/limits              # builds a ~1.2 GB tree
    .venv/bin/python bench/limits.py --work /tmp/NAME/limits --tree DIR --rounds 3

Every device, the source (unless ``--tree``), the restore target and the catalogs are
tmpfs mounts under ``--work`` (root). Memory at the peak: about 3x the tree (source,
one backup, one restore). The default tree has bench/local.py's mix at 45% of its
size: the Python library without site-packages, /usr/share/doc,
/usr/lib/x86_64-linux-gnu and one 128 MiB random file.

A round runs: ``tar -cf`` and ``tar -xf`` of the tree; ``find TREE -printf %s`` (the
walk that every size-sorted plan needs before its first byte moves); parbackup onto 1,
2 and 3 devices under bench/timeline.py's poller (``-vv``: its phases and every
process's CPU); the measured runs without the poller (1 and 2 devices, 3 plain, 4 with
``--parity 1``, 2 with ``--encrypt``, a restore of the 2-device set); and in this
process the required work that tar does not do, each at its fastest on one core (CPU
seconds, best over the rounds):

- BLAKE3 of every record (bytes in 4 MiB records, one call a record, as the format
  keeps a digest per record) — ``format.checksum``;
- record headers (``format.encode_record_header``, one a record, with its path);
- every file's extended attributes listed (``os.listxattr``: E3 keeps them, tar -cf
  does not look);
- the catalog rows: the 2-device run's files and records inserted into a fresh catalog
  through the catalog module (real schema, one transaction each, as the dispatcher
  does) and its copy (``copy_to``) written onto two devices, and read back for a
  restore (``files`` and ``records(payload_only)``);
- zstd at ``auto``'s fastest rung (-30) over what ``auto`` must try: each file's records
  until one saves less than 1/32 (the rest of that file is not tried), records under
  64 bytes never; AES-256-GCM (``crypto/aead.py``: the cached cipher up to 32 KiB,
  ``seal_parts`` above) over every stored payload and every file's path; one key
  creation (scrypt, ``crypto/keys.py``);
- parity, k=3 m=1 (``redundancy/``): ISA-L's encode of every 3 MiB row of the data,
  the XXH3-128 digests of its 4 units (parity volume version 3, docs/FORMAT.md), and
  the parity volume's bytes (a third of the data) written onto a tmpfs in 1 MiB writes.
  Beside it, for comparison, today's parity path alone over the same bytes
  (bench/parity_path.py: the collector and the 3 tees, CPU seconds).

The limits are times on an idle 2-core machine, built from CPU seconds (C), which a
loaded machine stretches less than walls (at load 5-10 here, tar's wall was 2-3 times
its CPU; CPU seconds moved by up to 40% between rounds), so the limits move less with
the load, while the measured ratios are walls as this run saw them. A one-thread tool on
tmpfs (tar, find) waits for nothing: its idle wall is its CPU (quiet runs: tar's wall
1.0-1.15x its CPU: a tar limit may stand up to 15% above the bound, never below it, so
its "yes" holds). From a polled run
(bench/timeline.py), the serial part is everything outside the data phase ("set begun"
to "every device committed"): the scan and plan that must see every size before the
first byte moves (P2-P5, W1), and the end.

- S* = max(the controller's CPU outside the data phase, every process's / 2): the
  serial part at best on 2 cores. T* = S* + max(the data phase's busiest process,
  every process's CPU in it / 2).
- 2 devices over 1 (Amdahl): from the 1-device run, T1* as above, and T2* = S* +
  max(C_p / 2, C_ctl, C_movers / 2): two movers halve what the one mover did, the
  controller's thread (C_ctl, its part of the data phase) does not, and 2 cores take
  half of the phase's CPU C_p at best. limit = T1* / T2*: the bound for the serial part
  and the controller as this run has them. Printed beside it: the same with only the
  required work (the walk W serial; a mover's C_tar - W + BLAKE3 + headers + listxattr;
  the catalog inserts and copies on the other core): (W + mover) / (W + (mover +
  catalog) / 2).
- backup CPU / tar -cf: C_min / C_tar, C_min = C_tar + BLAKE3 + headers + listxattr +
  catalog inserts and copies: tar reads, writes and walks every byte; the rest is what
  the format and the catalog require on top.
- backup wall / tar -cf: the walk W (find's CPU) is serial, the rest of C_min spread
  over 2 cores: (W + (C_min - W) / 2) / C_tar. Also printed: with the 2-device run's
  S* in place of the walk.
- restore wall / tar -xf: the catalog reads R are serial (the records must be known
  before they are read), then tar -xf's CPU and BLAKE3 of every byte over 2 cores:
  (R + (C_tarx + BLAKE3) / 2) / C_tarx.
- --parity 1 on 4 / plain on 3, and --encrypt (zstd auto) / plain on 2: the plain
  run's T* against T* with the extra work X (the parity items, or zstd + AES-GCM + key)
  added to its data phase: T*(X) / T*(0). The CPU ratio at best (C + X) / C is printed
  too, and for --encrypt the bound without zstd.

Each limit is a lower bound of the required work, measured at its fastest here (best
of the rounds); a measured ratio well below its limit would mean that work was not
done (or that the run's noise is larger than the gap). Where the limit is better than
the goal, the goal is reachable on this machine; the table says which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

import xxhash
import zstandard

from common import (
    SRC,
    Measured,
    conditions,
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    table,
    tmpfs,
    tree_stats,
    wipe,
)
from parbackup import format as fmt
from parbackup.catalog.store import Catalog
from parbackup.crypto import aead, compress, keys
from parbackup.redundancy.codec import RowCodec
from parbackup.redundancy.layout import UNIT
from parity_path import run_child
from timeline import phases_of, run_once
from zstd_levels import files_of

PASSWORD = {"PARBACKUP_PASSWORD": "bench passphrase"}
GOALS = {  # target: (goal, True when the ratio must be at least the goal)
    "2 devices over 1 (wall)": (1.7, True),
    "backup CPU / tar -cf": (1.5, False),
    "backup wall / tar -cf": (1.25, False),
    "restore wall / tar -xf": (1.5, False),
    "--parity 1 on 4 / plain on 3 (wall)": (1.15, False),
    "--encrypt (zstd auto) / plain (wall)": (1.3, False),
}


def build_tree(src: str) -> None:
    """bench/local.py's mix at about 45% of its size (~1.2 GB, ~14k files)."""
    lib = sysconfig.get_paths()["stdlib"]
    for i, d in enumerate((lib, "/usr/share/doc", "/usr/lib/x86_64-linux-gnu")):
        dest = os.path.join(src, f"t{i}-{os.path.basename(d.rstrip('/'))}")
        subprocess.run(["cp", "-a", d, dest], check=True)
        # not the installed packages, the second LLVM and the hard-linked drivers
        for extra in ("site-packages", "libLLVM-14.so.1", "dri"):
            path = os.path.join(dest, extra)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
    os.makedirs(os.path.join(src, "random"))
    random_file(os.path.join(src, "random", "r0.bin"), 128 << 20, seed=0)


# -- the data phase of a timeline run ---------------------------------------------------
@dataclass
class Phases:
    """One polled run (bench/timeline.py): its walls, and the CPU seconds of its serial
    part and of its data phase ("set begun" to "every device committed"), by process."""

    wall: float
    serial: float
    phase: float
    cpu_phase: float
    """Every process of the run, in the data phase."""
    top_phase: float
    """The busiest single process in the data phase."""
    ctl_phase: float
    movers_phase: float
    serial_all: float
    serial_ctl: float

    @classmethod
    def of(cls, result: dict) -> Phases:
        p = phases_of(result)
        a, b = p["begun"], p["committed"]
        procs = result["procs"]
        inside = {x.pid: x.busy_between(a, b) for x in procs}
        ctl = [x for x in procs if x.name == "controller"]
        return cls(
            wall=p["wall"],
            serial=p["wall"] - (b - a),
            phase=b - a,
            cpu_phase=sum(inside.values()),
            top_phase=max(inside.values()),
            ctl_phase=sum(inside[x.pid] for x in ctl),
            movers_phase=sum(inside[x.pid] for x in procs if x.name == "mover"),
            serial_all=sum(x.cpu - inside[x.pid] for x in procs),
            serial_ctl=sum(x.cpu - inside[x.pid] for x in ctl),
        )

    @property
    def serial_best(self) -> float:
        """S*: the serial part on an idle 2-core machine (the controller's own CPU in
        it, or half of every process's, whichever is more)."""
        return max(self.serial_ctl, self.serial_all / 2)

    def best(self, extra: float = 0.0) -> float:
        """T*: S* plus the data phase on an idle 2-core machine with ``extra`` CPU
        seconds more in it (its busiest process, or half of all, whichever is more)."""
        return self.serial_best + max(self.top_phase, (self.cpu_phase + extra) / 2)

    def best_on_two(self) -> float:
        """T2*: this 1-device run's work on 2 devices: the movers' part halves (two
        movers), the controller's thread does not."""
        return self.serial_best + max(self.cpu_phase / 2, self.ctl_phase, self.movers_phase / 2)


# -- the required work, in this process -------------------------------------------------
@dataclass
class Work:
    """CPU seconds of the required work items (each timed alone, one core)."""

    blake3: float = 0.0
    headers: float = 0.0
    xattrs: float = 0.0
    zstd: float = 0.0
    aes: float = 0.0
    records: int = 0
    tried: int = 0
    stored: int = 0


def tree_work(tree: str) -> Work:
    """One pass over the tree's files in 4 MiB records: BLAKE3, headers, zstd -30 as
    ``auto`` tries it, AES-GCM of the stored payloads and the paths."""
    w = Work()
    zc = zstandard.ZstdCompressor(level=compress.AUTO_FAST)
    master = os.urandom(32)
    cached = aead.cipher(master)
    set_id = os.urandom(16)
    clock = time.thread_time
    buf = bytearray(fmt.CHUNK)
    for fid, path in enumerate(sorted(files_of(tree, random_too=True))):
        name = path.encode(errors="surrogateescape")
        trying, offset = True, 0
        t = clock()
        os.listxattr(path, follow_symlinks=False)  # E3: every file's extended attributes
        w.xattrs += clock() - t
        t = clock()
        aead.seal_small(cached, aead.nonce(fid, aead.DOMAIN_FILE), [name], b"")
        w.aes += clock() - t
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            while n := fh.readinto(buf):
                data = memoryview(buf)[:n]
                t = clock()
                digest = fmt.checksum(data)
                t1 = clock()
                fmt.encode_record_header(1, set_id, fid, offset, n, size, 0o644, 0, 0, 0,
                                         digest, name, b"")  # fmt: skip
                t2 = clock()
                w.blake3 += t1 - t
                w.headers += t2 - t1
                payload: bytes | memoryview = data
                if trying and n >= 64:
                    t = clock()
                    packed = zc.compress(data)
                    w.zstd += clock() - t
                    w.tried += n
                    if len(packed) <= n - n // compress.AUTO_MIN_SAVING:
                        payload = packed
                    else:
                        trying = False
                t = clock()
                nonce = aead.nonce(w.records, aead.DOMAIN_RECORD)
                if len(payload) <= aead.SMALL:
                    aead.seal_small(cached, nonce, [payload], b"")
                else:
                    aead.seal_parts(master, nonce, [payload], b"")
                w.aes += clock() - t
                w.stored += len(payload)
                w.records += 1
                offset += n
    t = clock()
    keys.KeyFile.create(b"bench passphrase")
    w.aes += clock() - t
    return w


def catalog_work(run_catalog: str, fresh: str, devices: list[str]) -> tuple[float, float]:
    """(write, read) CPU seconds of the run's files and records: inserted into a fresh
    catalog as one set and its copy put on each of ``devices`` (X2: a copy of the
    catalog on the devices), and read back as a restore selects them."""
    with Catalog(run_catalog, create=False) as cat:
        set_id = cat.sets()[-1].id
        t = time.process_time()
        files = [(f.file_id, f.entry) for f in cat.files(set_id)]
        records = list(cat.records(set_id, payload_only=True))
        del records
        read = time.process_time() - t
        all_records = list(cat.records(set_id))
    with Catalog(fresh) as new:
        t = time.process_time()
        new.begin_set(set_id, strategy="threshold", order="desc", threshold=0, sources=["/"])
        new.add_files(set_id, files)
        new.add_records(set_id, all_records)
        new.copy_to(fresh + ".copy")
        for d in devices:
            shutil.copyfile(fresh + ".copy", os.path.join(d, "catalog.copy"))
        insert = time.process_time() - t
    for d in devices:
        os.unlink(os.path.join(d, "catalog.copy"))
    for suffix in ("", "-wal", "-shm", ".copy"):
        with contextlib.suppress(OSError):
            os.unlink(fresh + suffix)
    return insert, read


def parity_work(nbytes: int, where: str) -> float:
    """CPU seconds of k=3 m=1 parity over ``nbytes`` of data: ISA-L, XXH3-128 of the
    units, the parity volume written to ``where`` (a tmpfs) in 1 MiB writes."""
    codec = RowCodec(3, 1, UNIT)
    row = os.urandom(3 * UNIT)
    rows = -(-nbytes // (3 * UNIT))
    path = os.path.join(where, "parity.vol")
    t = time.process_time()
    with open(path, "wb", buffering=0) as out:
        for _ in range(rows):
            parity, _headers = codec.encode_row(row)
            for i in range(3):
                xxhash.xxh3_128_digest(memoryview(row)[i * UNIT : (i + 1) * UNIT])
            xxhash.xxh3_128_digest(parity[0])
            out.write(parity[0])
    spent = time.process_time() - t
    os.unlink(path)
    return spent


# -- one round ---------------------------------------------------------------------------
def one_round(tree: str, devs: list[str], state: str, target: str) -> dict:
    """Every run of a round and the in-process work; the figures by name."""
    got: dict = {}

    def pb(name: str, n: int, *extra: str, env: dict | None = None) -> Measured:
        catalog = os.path.join(state, f"{name}.sqlite")
        argv = parbackup_argv("backup", tree, *[a for d in devs[:n] for a in ("-d", d)])
        m = run(name, [*argv, "--json", *extra], env={**parbackup_env(catalog), **(env or {})})
        return m

    def clean(catalog: str | None = None) -> None:
        for d in devs:
            wipe(d)
        if catalog:
            for f in os.listdir(state):
                if f.startswith(catalog):
                    os.unlink(os.path.join(state, f))

    got["tar"] = run("tar -cf", ["tar", "-cf", f"{devs[0]}/t.tar", "-C", tree, "."])
    got["tarx"] = run("tar -xf", ["tar", "-xf", f"{devs[0]}/t.tar", "-C", target])
    wipe(target)
    clean()
    got["walk"] = run("find", ["find", tree, "-printf", "%s\n"])
    for n in (1, 2, 3):
        catalog = os.path.join(state, f"tl{n}.sqlite")
        got[f"tl{n}"] = Phases.of(run_once(tree, devs[:n], catalog, []))
        clean(f"tl{n}.sqlite")
    got["pb1"] = pb("pb1", 1)
    clean("pb1.sqlite")
    got["pb2"] = pb("pb2", 2)
    env = parbackup_env(os.path.join(state, "pb2.sqlite"))
    got["restore"] = run("restore", parbackup_argv("restore", "--target", target, "--json"),
                         env=env)  # fmt: skip
    wipe(target)
    got["catalog"] = catalog_work(
        os.path.join(state, "pb2.sqlite"), f"{state}/fresh.sqlite", devs[2:4]
    )
    clean("pb2.sqlite")
    got["pb3"] = pb("pb3", 3)
    clean("pb3.sqlite")
    got["pb4p"] = pb("pb4p", 4, "--parity", "1")
    clean("pb4p.sqlite")
    got["enc"] = pb("enc", 2, "--encrypt", env=PASSWORD)
    clean("enc.sqlite")
    got["work"] = tree_work(tree)
    nbytes = tree_stats(tree)[1]
    got["parity"] = parity_work(nbytes, devs[0])
    sizes = argparse.Namespace(size=max(3, nbytes >> 20), k=3, m=1)
    path = run_child(str(SRC), devs[0], sizes)  # today's parity path
    got["parity_path"] = path["collector"] + path["tees"]
    wipe(devs[0])
    return got


def ratios(g: dict) -> dict[str, tuple[float, float, str]]:
    """target: (measured, limit, what the limit is made of)."""
    tar, tarx, walk, wk = g["tar"], g["tarx"], g["walk"], g["work"]
    insert, read = g["catalog"]
    tl1, tl2, tl3 = g["tl1"], g["tl2"], g["tl3"]
    out = {}
    cpu_min = tar.cpu + wk.blake3 + wk.headers + wk.xattrs + insert
    mover = cpu_min - insert - walk.cpu  # a mover's required work; the catalog's aside
    required = (walk.cpu + mover) / (walk.cpu + max(mover / 2, (mover + insert) / 2))
    out["2 devices over 1 (wall)"] = (
        g["pb1"].wall / g["pb2"].wall,
        tl1.best() / tl1.best_on_two(),
        f"1 device: S* {tl1.serial_best:.2f} s (controller {tl1.serial_ctl:.2f}, all "
        f"{tl1.serial_all:.2f} s CPU), data phase CPU {tl1.cpu_phase:.2f} s (movers "
        f"{tl1.movers_phase:.2f}, controller {tl1.ctl_phase:.2f}): T1* {tl1.best():.2f}, "
        f"T2* {tl1.best_on_two():.2f} s; the 2-device run's own T* {tl2.best():.2f} s "
        f"({tl1.best() / tl2.best():.2f}x); with the required work only (the walk "
        f"{walk.cpu:.2f} s serial, a mover's {mover:.2f} s, the catalog's {insert:.2f} s): "
        f"{required:.2f}x",
    )
    out["backup CPU / tar -cf"] = (
        g["pb2"].cpu / tar.cpu,
        cpu_min / tar.cpu,
        f"tar {tar.cpu:.2f} + BLAKE3 {wk.blake3:.2f} + headers {wk.headers:.2f} + "
        f"listxattr {wk.xattrs:.2f} + catalog "
        f"inserts and copies {insert:.2f} s ({wk.records} records)",
    )
    rest = max(0.0, cpu_min - walk.cpu) / 2
    out["backup wall / tar -cf"] = (
        g["pb2"].wall / tar.wall,
        (walk.cpu + rest) / tar.cpu,
        f"(walk {walk.cpu:.2f} + ({cpu_min:.2f} - {walk.cpu:.2f}) / 2) / tar {tar.cpu:.2f}"
        f" s; with the 2-device run's serial part S* ({tl2.serial_best:.2f} s) for the "
        f"walk: {(tl2.serial_best + rest) / tar.cpu:.2f}x",
    )
    out["restore wall / tar -xf"] = (
        g["restore"].wall / tarx.wall,
        (read + (tarx.cpu + wk.blake3) / 2) / tarx.cpu,
        f"(catalog reads {read:.2f} + (tar -xf {tarx.cpu:.2f} + BLAKE3 {wk.blake3:.2f}) / 2)"
        f" / tar -xf {tarx.cpu:.2f} s",
    )
    par = g["parity"]
    out["--parity 1 on 4 / plain on 3 (wall)"] = (
        g["pb4p"].wall / g["pb3"].wall,
        tl3.best(par) / tl3.best(),
        f"3 devices: S* {tl3.serial_best:.2f}, data phase CPU {tl3.cpu_phase:.2f} s "
        f"(busiest process {tl3.top_phase:.2f}); + ISA-L, XXH3, parity writes {par:.2f} s "
        f"(today's parity path, bench/parity_path.py: {g['parity_path']:.2f} s) "
        f"(CPU ratio at best {(g['pb3'].cpu + par) / g['pb3'].cpu:.2f}x, measured "
        f"{g['pb4p'].cpu / g['pb3'].cpu:.2f}x)",
    )
    crypto = wk.zstd + wk.aes
    out["--encrypt (zstd auto) / plain (wall)"] = (
        g["enc"].wall / g["pb2"].wall,
        tl2.best(crypto) / tl2.best(),
        f"2 devices: S* {tl2.serial_best:.2f}, data phase CPU {tl2.cpu_phase:.2f} s "
        f"(busiest process {tl2.top_phase:.2f}); + zstd -30 {wk.zstd:.2f} s "
        f"({wk.tried / 1e6:.0f} MB tried) + AES-GCM and key {wk.aes:.2f} s (CPU ratio at "
        f"best {(g['pb2'].cpu + crypto) / g['pb2'].cpu:.2f}x, measured "
        f"{g['enc'].cpu / g['pb2'].cpu:.2f}x); encrypted only, no zstd: "
        f"{tl2.best(wk.aes) / tl2.best():.2f}x",
    )
    return out


def best_work(rounds: list[dict]) -> None:
    """Every round's in-process items set to their fastest over the rounds (a lower
    bound wants each at its fastest; the machine is shared)."""
    fields = ("blake3", "headers", "xattrs", "zstd", "aes")
    best = {f: min(getattr(r["work"], f) for r in rounds) for f in fields}
    par = min(r["parity"] for r in rounds)
    insert = min(r["catalog"][0] for r in rounds)
    read = min(r["catalog"][1] for r in rounds)
    for r in rounds:
        for f, v in best.items():
            setattr(r["work"], f, v)
        r["parity"], r["catalog"] = par, (insert, read)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 4)[4],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go (your own)")
    ap.add_argument("--tree", default="", help="measure on this tree (default: build one)")
    ap.add_argument("--size", default="", help="each device's tmpfs (default: 1.2x the tree)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; the table gives medians")
    ap.add_argument("--json", default="", help="also write every round's ratios to this file")
    args = ap.parse_args()
    w = args.work
    with contextlib.ExitStack() as stack:
        if args.tree:
            tree = args.tree
        else:
            tree = stack.enter_context(tmpfs(f"{w}/src", "1400M"))
            build_tree(tree)
        files, nbytes = tree_stats(tree)
        size = args.size or f"{int(nbytes * 1.2 / 1e6) + 64}M"
        devs = [stack.enter_context(tmpfs(f"{w}/dev{i}", size)) for i in range(4)]
        state = stack.enter_context(tmpfs(f"{w}/state", "512M"))
        target = stack.enter_context(tmpfs(f"{w}/restore", size))
        rounds = []
        for r in range(args.rounds):
            rounds.append(one_round(tree, devs, state, target))
            print(f"round {r + 1} done; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    best_work(rounds)
    per = [ratios(g) for g in rounds]
    print(f"tree {tree}: {files} files, {nbytes / 1e6:.0f} MB; {args.rounds} round(s). "
          f"{conditions()}\n")  # fmt: skip
    for target in GOALS:
        each = ", ".join(f"{p[target][0]:.2f}/{p[target][1]:.2f}" for p in per)
        print(f"{target}: measured/limit per round {each}")
    print()
    rows = []
    for target, (goal, at_least) in GOALS.items():
        measured = statistics.median(p[target][0] for p in per)
        limit = statistics.median(p[target][1] for p in per)
        reachable = limit >= goal if at_least else limit <= goal
        rows.append([
            target,
            f"{'>=' if at_least else '<='} {goal}",
            f"{measured:.2f}x",
            f"{limit:.2f}x",
            "yes" if reachable else "**no**",
            per[len(per) // 2][target][2],
        ])  # fmt: skip
    print(table(["target", "goal", "measured", "limit", "goal within the limit", "limit made of"],
                rows))  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "conditions": conditions(),
                    "tree": {"path": tree, "files": files, "bytes": nbytes},
                    "goals": GOALS,
                    "rounds": [
                        {t: {"measured": m, "limit": lim, "made_of": why}
                         for t, (m, lim, why) in p.items()}
                        for p in per
                    ],
                },
                fh,
                indent=1,
            )  # fmt: skip


if __name__ == "__main__":
    main()

"""The parity path alone (issue 12): what ``backup --parity m`` adds to a backup's CPU.

    .venv/bin/python bench/parity_path.py --work /tmp/NAME/pp            # k=3, m=1, 256 MiB
    .venv/bin/python bench/parity_path.py --work /tmp/NAME/pp --before OLD/src --rounds 9

A real parity collector thread (engine/paritystream.py) in this process, its parity
device a directory on a tmpfs of its own, and k tee processes (engine/paritytee.py)
forked from it, each feeding its column (``--size`` MiB in all, in 1 MiB writes, as a
mover's large records go) through its shared-memory slots, in the tree's own unit
(redundancy/layout.py UNIT; a copy of src/ with another UNIT as ``--before`` compares
units): the copy into the slots,
the unit digests, the messages, ISA-L's update, the parity volume's writes. No source
is read and no data device written, so what it prints is the parity path's own CPU,
far steadier on a busy machine than the difference of two whole backups (bench/parity.py):

- collector: CPU seconds of this process (the collector thread; the main thread only
  waits), fragment headers and the parity device's writes included;
- tees: CPU seconds of the k tee processes together.

With ``--before SRC``, every round runs the same path from an older source tree as well
(alternating which goes first); the medians of both and their ratio are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import SRC, tmpfs

MIB = 1 << 20


def child(work: str, size: int, k: int, m: int, record: int = 0) -> dict:
    """One run of the path (in a process whose PYTHONPATH names the source tree): 1 MiB
    writes, or with ``record`` records of a 96-byte header and ``record`` bytes
    (bench/parity_rows.py), two writes each."""
    from parbackup.engine.paritystream import (
        Abandon,
        Begin,
        Close,
        Collector,
        Listening,
        Opened,
        ParitySpec,
        Written,
    )
    from parbackup.engine.paritytee import ParityLink, ParityTee
    from parbackup.redundancy.layout import UNIT

    unit = UNIT  # the tree's own unit, and the slots and window it gives one
    spec = ParitySpec(tuple(dirs_for(work, m)), unit, timeout=60.0)
    slots = ParityLink("", "", 0, unit).slots
    with contextlib.suppress(ImportError):  # trees before session 10: fixed counts
        from parbackup.engine.paritystream import window_for
        from parbackup.engine.paritytee import slots_for

        spec = ParitySpec(spec.urls, unit, window_for(unit), timeout=60.0)
        slots = slots_for(unit)
    data = os.urandom(4 * MIB + 96)
    per = max(1, size // k)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # (common's compileall)
    started, cpu = time.perf_counter(), time.process_time()
    collector = Collector(spec)
    opened = collector.channel.recv()
    assert isinstance(opened, Opened), opened
    collector.send(Begin(bytes(16), tuple(f"{j:02x}" * 16 for j in range(k)), 1))
    listening = collector.channel.recv()
    assert isinstance(listening, Listening), listening
    pids = []
    for j in range(k):
        pid = os.fork()
        if pid == 0:  # a mover's tee: its column, 1 MiB at a time
            tee = ParityTee(ParityLink(listening.address, listening.token, j, unit, slots))
            view = memoryview(data)
            if record:  # whole records, about ``per`` MiB
                period = view[: 96 + record] if 96 + record <= len(data) else view
                length = per * MIB // len(period) * len(period)
                for _ in range(length // len(period)):
                    tee.feed(period[:96])
                    tee.feed(period[96:])
            else:
                length = per * MIB
                for i in range(per):
                    tee.feed(view[(i % 4) * MIB : (i % 4 + 1) * MIB])
            tee.volume_done("v", length)
            tee.end()
            os._exit(1 if tee.broken else 0)
        pids.append(pid)
    failed = [p for p in pids if os.waitpid(p, 0)[1] != 0]
    collector.send(Close())
    written = collector.channel.recv()
    collector.send(Abandon())
    collector.thread.join(60)
    if failed or not isinstance(written, Written):
        raise SystemExit(f"the parity path failed: {written!r}")
    tees = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "collector": time.process_time() - cpu,
        "tees": tees.ru_utime + tees.ru_stime - before.ru_utime - before.ru_stime,
        "wall": time.perf_counter() - started,
        "rows": written.rows,
        "unit": unit,
    }


def dirs_for(work: str, m: int) -> list[str]:
    """The m parity devices' directories under ``work``, made empty."""
    dirs = []
    for i in range(m):
        path = os.path.join(work, f"p{i}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        dirs.append(path)
    return dirs


def run_child(src: str, work: str, args: argparse.Namespace, *extra: str, script: str = "") -> dict:
    """One child run of ``script`` (this file by default) with ``src`` on its PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": src}
    argv = [sys.executable, script or __file__, "--child", "--work", work, *extra]
    sizes = ["--size", str(args.size), "--k", str(args.k), "--m", str(args.m)]
    out = subprocess.run([*argv, *sizes], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{src}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def arguments(doc: str, work: str) -> argparse.ArgumentParser:
    """The options this bench and bench/parity_rows.py share."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--work", default=work, help="where the tmpfs goes")
    ap.add_argument("--size", type=int, default=256, help="MiB over all columns")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--record", type=int, default=0, help="payload bytes a record (0: 1 MiB writes)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap


def rounds(kinds: dict, args: argparse.Namespace) -> dict[str, list[dict]]:
    """``args.rounds`` rounds of every kind (name -> a function of the work directory
    that runs one child), the order turning round every round; each round's CPU and
    the medians printed."""
    size = f"{(args.size // args.k + 1) * args.m + 64}M"
    got: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tmpfs(args.work, size) as work:
        for r in range(args.rounds):
            for kind in list(kinds) if r % 2 == 0 else list(reversed(kinds)):
                got[kind].append(kinds[kind](work))
            line = "; ".join(
                f"{kind} collector {got[kind][-1]['collector']:.3f} tees "
                f"{got[kind][-1]['tees']:.3f}"
                for kind in kinds
            )
            print(f"round {r + 1}: {line} (CPU s); load {os.getloadavg()[0]:.1f}")
    for kind, runs in got.items():
        col = statistics.median(x["collector"] for x in runs)
        tee = statistics.median(x["tees"] for x in runs)
        both = statistics.median(x["collector"] + x["tees"] for x in runs)
        print(
            f"{kind}: k={args.k} m={args.m}, {args.size} MiB, {runs[0]['rows']} rows of"
            f" {runs[0].get('unit', MIB) >> 10} KiB units: median "
            f"CPU s collector {col:.3f}, tees {tee:.3f}, together {both:.3f}"
        )
    shutil.rmtree(Path(args.work), ignore_errors=True)
    return got


def ratio(got: dict[str, list[dict]], a: str, b: str) -> float:
    """The median over rounds of kind ``a``'s CPU over kind ``b``'s in the same round."""
    return statistics.median(
        (x["collector"] + x["tees"]) / (y["collector"] + y["tees"])
        for x, y in zip(got[a], got[b], strict=True)
    )


def main() -> None:
    ap = arguments(__doc__, "/tmp/pbparitypath")
    ap.add_argument("--before", default="", help="an older src/ to run alternately")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.work, args.size, args.k, args.m, args.record)))
        return
    if args.before:
        subprocess.run([sys.executable, "-m", "compileall", "-q", args.before], check=True)
    srcs = {"now": str(SRC), **({"before": args.before} if args.before else {})}
    extra = ("--record", str(args.record))
    kinds = {kind: (lambda w, s=src: run_child(s, w, args, *extra)) for kind, src in srcs.items()}
    got = rounds(kinds, args)
    if args.before:
        print(f"now / before, same round: {ratio(got, 'now', 'before'):.2f}")


if __name__ == "__main__":
    main()

"""User-space instructions a mover spends on small files, counted by valgrind (callgrind):
a figure that the machine's load does not move, for comparing two checkouts.

    .venv/bin/python bench/mover_instructions.py --tree DIR old=/path/to/old/src new=src

For every version, runs this script under ``valgrind --tool=callgrind`` twice with that
version's sources first on the path: once doing everything but moving the files
(interpreter, imports, the scan of ``--tree``, the items built, the device), once also
putting every regular file of 1 B-256 KiB (at most ``--limit``) through the mover's
``write_item`` onto a fresh directory in /dev/shm, as bench/mover_floor.py's ``mover``
does, then its commit. The difference is the mover's instructions for those files (not
the ~9 k a file of building this script's items, counted in both runs since session 21);
the kernel's work (the system calls, page faults) is not counted. Needs valgrind; about
50 times slower than a run.

With ``--cpu N`` it instead runs the same in N alternating rounds without valgrind and
prints the CPU seconds (user + system) of the mover's part alone, best of the rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from parbackup.devices.registry import open_device
from parbackup.devices.retry import RetryingDevice
from parbackup.engine import mover as mv
from parbackup.engine.gcpause import paused_gc
from parbackup.engine.messages import Begin, MoverSpec
from parbackup.engine.moversource import SMALL
from parbackup.engine.prepare import scan, source_specs
from parbackup.entries import FILE

HERE = os.path.dirname(os.path.abspath(__file__))


class _Channel:
    """The dispatcher's end, reduced to keeping what the mover says (no import of
    bench/mover_floor.py: it puts this checkout's sources first on the path)."""

    def __init__(self) -> None:
        self.said: list = []

    def send(self, msg: object) -> None:
        self.said.append(msg)

    def poll(self, timeout: float = 0.0) -> bool:
        return False


def child(tree: str, limit: int, move: bool = True) -> None:
    """Put up to ``limit`` small files of ``tree`` through a mover (no timing); with
    ``move`` false only build their items (the base of an instruction count)."""
    specs = source_specs([tree])
    e = scan(specs, [])
    blob, at, roots, links = e.blobs()
    rows = [f for f in range(len(e)) if e.kind[f] == FILE and 0 < e.size[f] <= SMALL][:limit]
    items = [
        (seq, f, 0, e.size[f], e.kind[f], e.size[f], e.mode[f], e.uid[f], e.gid[f],
         e.mtime_ns[f], e.ctime_ns[f], e.ino[f], e.dev[f], e.source[f],
         roots.get(e.source[f], b"") + blob[at[f] : at[f + 1]], links.get(f, b""), None, b"")
        for seq, f in enumerate(rows, 1)
    ]  # fmt: skip
    dev = tempfile.mkdtemp(prefix="mover-instructions-", dir="/dev/shm")
    try:
        m = mv._Mover(MoverSpec(0, dev, tuple(specs)), _Channel())  # type: ignore[arg-type]
        m.device = RetryingDevice(open_device(dev))
        m.device.open()
        m.label = m.device.ensure_label().label
        m.handle(Begin(os.urandom(16), {"set": "bench"}))
        started = time.process_time()
        with paused_gc():  # as move() runs it
            for item in items if move else ():
                m.write_item(item)
            m.commit()
        cpu = time.process_time() - started
        m.device.close()
    finally:
        shutil.rmtree(dev, ignore_errors=True)
    print(f"files {len(items)} bytes {sum(i[3] for i in items)} cpu {cpu:.4f}")


def counted(src: str, tree: str, limit: int, move: bool = True) -> tuple[int, str]:
    """(instructions, the child's output) of one run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        argv += [sys.executable, __file__, "--child", "--tree", tree, "--limit", str(limit)]
        argv += [] if move else ["--no-move"]
        env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    got = re.search(r"Collected : (\d+)", done.stderr)
    assert got, done.stderr[-2000:]
    return int(got.group(1)), done.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="*", help="NAME=SRC_DIR")
    ap.add_argument("--tree", default="/usr/share/doc")
    ap.add_argument("--limit", type=int, default=1_000_000)
    ap.add_argument("--cpu", type=int, default=0, help="instead: CPU s, best of N alternating")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-move", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.tree, args.limit, not args.no_move)
        return
    versions = [v.split("=", 1) for v in args.versions]
    if args.cpu:
        best = {name: 1e9 for name, _ in versions}
        for _ in range(args.cpu):
            for name, src in versions:
                argv = [sys.executable, __file__, "--child", "--tree", args.tree]
                env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
                out = subprocess.run([*argv, "--limit", str(args.limit)], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()  # fmt: skip
                best[name] = min(best[name], float(out[5]))
                print(f"{name}: {out[1]} files, CPU {float(out[5]):.3f} s, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        print("best: " + ", ".join(f"{n} {b:.3f} s" for n, b in best.items()))
        return
    for name, src in versions:
        subprocess.run([sys.executable, "-m", "compileall", "-q", src], capture_output=True)
        base, _ = counted(src, args.tree, args.limit, move=False)
        full, out = counted(src, args.tree, args.limit)
        n = int(out.split()[1])
        print(f"{name}: {out}: {(full - base) / 1e6:.1f} M instructions, "
              f"{(full - base) / max(n, 1) / 1e3:.1f} k a file")  # fmt: skip


if __name__ == "__main__":
    main()

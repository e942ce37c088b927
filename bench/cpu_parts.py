"""Where a backup's CPU seconds go, per process and per part (issue 10).

    .venv/bin/python bench/cpu_parts.py SRC DEV1 [DEV2 ...] --catalog PATH

Runs ``parbackup backup SRC -d DEV1 -d DEV2 ... --json`` in this process, with the CPU
time of its thread (``time.thread_time``) summed around the controller's parts (imports,
scan, plan, the dispatcher and what it does between the movers' messages, the end), and
in every mover around its system calls, hash and header (a ``sitecustomize`` module put
on the movers' path wraps them). Prints both tables; the process totals come from
``getrusage``. The wrappers cost about 1 us a call, so a mover's "Python and the rest"
is a little high. Devices and catalog should be fresh (empty directories, a new path).
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import resource
import runpy
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

_MOVER_HOOK = """
import os, sys
if "parbackup.engine.mover:move" in " ".join(sys.argv):
    import functools, resource, time
    from collections import defaultdict
    acc, cnt, busy = defaultdict(float), defaultdict(int), set()
    start = resource.getrusage(resource.RUSAGE_SELF)
    def wrap(owner, name, label):
        f = getattr(owner, name)
        @functools.wraps(f)
        def w(*a, **k):
            if label in busy:
                return f(*a, **k)
            busy.add(label); c0 = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.thread_time() - c0; cnt[label] += 1; busy.discard(label)
        setattr(owner, name, w)
    import parbackup.engine.mover as M
    imported = resource.getrusage(resource.RUSAGE_SELF)
    from parbackup.sources import local as L
    from parbackup.devices import local as DL
    from parbackup import xattrs as X
    for owner, name, label in [
        (M._Mover, "run", "run (all of the work)"), (DL._FileWriter, "write", "device writes"),
        (M, "checksum", "BLAKE3"), (L._LocalReader, "readinto", "reads (pread)"),
        (L.LocalTree, "open", "open + fstat"), (L._LocalReader, "identity", "fstat after read"),
        (X, "read_fd", "flistxattr"), (L._LocalReader, "close", "close"),
        (M, "plain_header", "record headers"), (M._Mover, "tell", "messages sent"),
    ]:
        wrap(owner, name, label)
    closing = M.close
    def close(mover):
        r = resource.getrusage(resource.RUSAGE_SELF)
        cpu = lambda u: u.ru_utime + u.ru_stime
        with open(os.path.join(os.environ["CPU_PARTS_OUT"], f"mover-{os.getpid()}.txt"), "w") as fh:
            fh.write(f"mover {os.getpid()}: {cpu(r):.3f} s (interpreter {cpu(start):.3f},"
                     f" imports {cpu(imported) - cpu(start):.3f})\\n")
            for k, v in sorted(acc.items(), key=lambda x: -x[1]):
                fh.write(f"  {k:28s} {v:7.3f} s ({cnt[k]} calls)\\n")
        return closing(mover)
    M.close = close
"""


def main() -> None:
    out = tempfile.mkdtemp(prefix="cpu-parts-")
    with open(os.path.join(out, "sitecustomize.py"), "w") as fh:
        fh.write(_MOVER_HOOK)
    os.environ["CPU_PARTS_OUT"] = out
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), out])
    acc: dict[str, float] = defaultdict(float)
    cnt: dict[str, int] = defaultdict(int)
    started = time.perf_counter()

    def report() -> None:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        own, theirs = me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime
        print(f"wall {time.perf_counter() - started:.2f} s; CPU: controller {own:.3f} s,"
              f" movers {theirs:.3f} s, all {own + theirs:.3f} s; load average"
              f" {os.getloadavg()[0]:.1f}", file=sys.stderr)  # fmt: skip
        for k, v in sorted(acc.items(), key=lambda x: -x[1]):
            print(f"  {k:40s} {v:7.3f} s ({cnt[k]} calls)", file=sys.stderr)
        for path in sorted(glob.glob(os.path.join(out, "mover-*.txt"))):
            print(Path(path).read_text(), end="", file=sys.stderr)

    atexit.register(report)
    before = resource.getrusage(resource.RUSAGE_SELF)
    import parbackup.cli.backup
    import parbackup.cli.main  # noqa: F401

    after = resource.getrusage(resource.RUSAGE_SELF)
    acc["imports (after the interpreter's own)"] = (
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    )
    from parbackup.catalog import recordrows, store
    from parbackup.engine import backup, dispatch

    def wrap(owner: object, name: str, label: str) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def timed(*a, **k):
            c0 = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.thread_time() - c0
                cnt[label] += 1

        setattr(owner, name, timed)

    for owner, name, label in [
        (backup, "scan", "scan"),
        (backup, "make_plan", "plan"),
        (dispatch.Dispatcher, "run", "dispatcher (all of its loop)"),
        (dispatch.Dispatcher, "receive", "  messages received and handled"),
        (recordrows.RecordRows, "add_record_columns", "    record references inserted"),
        (store.Catalog, "add_entries", "  files inserted (between messages)"),
        (dispatch.Dispatcher, "work_items", "  work items built"),
        (backup._Backup, "finish", "the end (set finished, catalog copy)"),
        (backup._Backup, "copy_catalog", "  catalog copy"),
    ]:
        wrap(owner, name, label)
    argv = sys.argv[1:]
    if len(argv) < 3 or "--catalog" not in argv:
        raise SystemExit(__doc__)
    at = argv.index("--catalog")
    catalog, rest = argv[at + 1], argv[:at] + argv[at + 2 :]
    source, devices = rest[0], rest[1:]
    sys.argv = ["parbackup", "backup", source, *[a for d in devices for a in ("-d", d)],
                "--catalog", catalog, "--json"]  # fmt: skip
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the report is not wanted here
    runpy.run_module("parbackup", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""User-space instructions a restore reader spends per record, counted by valgrind
(callgrind): a figure the machine's load does not move, for comparing two checkouts.

    .venv/bin/python bench/restore_instructions.py --catalog CAT --device DEV \\
        --target EMPTY_DIR [--limit 3000] [--largest 4096] old=/path/to/old/src new=src

The work is taken once from the latest set of ``CAT`` (its records on ``DEV``, with this
checkout's code) and pickled. For every version, runs this script under ``valgrind
--tool=callgrind`` twice with that version's sources first on the path: once doing
everything but the reading (interpreter, imports, the pickled work unpacked, the
directories made under ``EMPTY_DIR``), once also reading the first ``--limit`` of
those records of at most ``--largest`` bytes (16 KiB: most of a tree's files; in
volume order) with the reader's own ``read_records`` into a ``DirectorySink`` under
``EMPTY_DIR``, as bench/restore_sink.py does. The difference is the reader's
instructions for those records (the checks, the sink's per-file work, BLAKE3); the
kernel's work (the system calls, page faults, the copies into tmpfs) is not counted.
``PYTHONHASHSEED`` is fixed, so that sets and dicts lay out alike in every run. The
reader's read buffer is made once per run (zeroed: a few million instructions), as in a
real reader once per process. Needs valgrind; about 50 times slower than a run.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile


class _Quiet:
    def send(self, _message: object) -> None:
        """The parent's end of the channel: nobody listens."""


def prepare(catalog: str, device: str, target: str, limit: int, largest: int, out: str) -> None:
    """Pickle into ``out`` the work ``child`` reads: the set id, the device's label, the
    records (as the controller sends them) and the files' targets and identities."""
    from parbackup.cli.common import open_catalog_to_read
    from parbackup.devices.registry import open_device
    from parbackup.readback.messages import unpack
    from parbackup.readback.select import packed_by_label, select_for_restore

    with open_catalog_to_read(catalog) as cat:
        sid = list(cat.sets())[-1].id
        sel = select_for_restore(cat, sid, [])
        packed = packed_by_label(cat, sid, {f.file_id for f in sel.chosen})
    dev = open_device(device)
    dev.open(write=False)
    label = dev.read_label().label
    recs = sorted(unpack(label, packed[label]), key=lambda w: (w[1].volume, w[1].position))
    recs = [w for w in recs if w[1].size <= largest][:limit]
    entries = {f.file_id: f.entry for f in sel.chosen}
    root = target.rstrip("/")
    fids = {fid for fid, _ref in recs}
    files = {
        fid: (root + entries[fid].path, entries[fid].size, entries[fid].mode,
              entries[fid].uid, entries[fid].gid, entries[fid].mtime_ns, True)
        for fid in fids
    }  # fmt: skip
    idents = {fid: sel.idents[fid] for fid in fids if fid in sel.idents}
    with open(out, "wb") as fh:
        pickle.dump((sid, label, [w for w in packed[label] if w[0] in fids], files, idents), fh)


def child(device: str, target: str, work: str, read: bool) -> None:
    """The measured work, in this process (run under callgrind by ``main``)."""
    from parbackup.devices.registry import open_device
    from parbackup.readback import reader
    from parbackup.readback.messages import unpack
    from parbackup.readback.relay import build
    from parbackup.readback.sinks import DirectorySinkSpec

    with open(work, "rb") as fh:
        sid, label, packed, files, idents = pickle.load(fh)
    dev = open_device(device)
    dev.open(write=False)
    recs = unpack(label, packed)
    root = target.rstrip("/")
    _wipe(root)  # emptied by the parent already
    for d in sorted({os.path.dirname(f[0]) for f in files.values()}):
        os.makedirs(d, exist_ok=True)
    if read:
        sink = build(DirectorySinkSpec(files, root, ""), None)
        results = reader._Results(_Quiet(), sink, recs)
        reader.read_records(dev, bytes.fromhex(sid), recs, results.deliver, label=label,
                            idents=idents)  # fmt: skip
        results.finish()
        print(f"records {len(recs)} bytes {sum(r.size for _f, r in recs)}")


def _wipe(root: str) -> None:
    """Empty the restore target."""
    for name in os.listdir(root):
        shutil.rmtree(os.path.join(root, name))


def _count(src: str, args: argparse.Namespace, work: str, read: bool) -> tuple[int, str]:
    """(instructions, the child's output) of one run under callgrind."""
    _wipe(args.target)  # here, not counted: every run starts from an empty target
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        argv += [sys.executable, os.path.abspath(__file__), "--child", "--work", work]
        argv += ["--catalog", args.catalog, "--device", args.device, "--target", args.target]
        argv += ["--read"] if read else []
        env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "PYTHONHASHSEED": "0"}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if found is None:
            raise SystemExit(proc.stderr[-2000:])
        return int(found.group(1)), proc.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="*", help="NAME=SRC_DIR")
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--limit", type=int, default=4000, help="records read")
    ap.add_argument("--largest", type=int, default=16 << 10, help="bytes of a record, at most")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--read", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.device, args.target, args.work, args.read)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.join(tmp, "work.pickle")
        prepare(args.catalog, args.device, args.target, args.limit, args.largest, work)
        for version in args.versions:
            name, src = version.split("=", 1)
            base, _ = _count(src, args, work, read=False)
            full, out = _count(src, args, work, read=True)
            n = int(out.split()[1])
            per = (full - base) / n
            print(f"{name}: {full - base:,} instructions for {out}: {per:,.0f} a record")
    _wipe(args.target)


if __name__ == "__main__":
    main()

"""One reader's CPU over one device, with its directory sink or none, in this process.

    sudo .venv/bin/python bench/restore_sink.py --catalog CAT --device DEV --target EMPTY \\
        [--null] [--rounds 3] [--profile]

Reads the latest set's records on ``DEV`` (a backup made beforehand) with the reader's
own ``read_records`` and delivers them into a ``DirectorySink`` under ``EMPTY`` (its
directories made beforehand, as the controller does while the readers read), or with
``--null`` to nothing, and prints the CPU seconds of the read (``time.process_time``).
The difference of the two is the sink's per-file work; run with ``PYTHONPATH`` set to
another checkout's ``src`` to compare. ``--profile``: cProfile's top 25 as well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from parbackup.cli.common import open_catalog_to_read
from parbackup.devices.registry import open_device
from parbackup.readback import reader
from parbackup.readback.messages import unpack
from parbackup.readback.relay import build
from parbackup.readback.select import packed_by_label, select_for_restore
from parbackup.readback.sinks import DirectorySinkSpec


class _Quiet:
    def send(self, _message: object) -> None:
        """The parent's end of the channel: nobody listens."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--null", action="store_true", help="deliver to nothing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with open_catalog_to_read(args.catalog) as cat:
        sid = list(cat.sets())[-1].id
        sel = select_for_restore(cat, sid, [])
        packed = packed_by_label(cat, sid, {f.file_id for f in sel.chosen})
    dev = open_device(args.device)
    dev.open(write=False)
    label = dev.read_label().label
    recs = unpack(label, packed[label])
    entries = {f.file_id: f.entry for f in sel.chosen}
    root = args.target.rstrip("/")
    files = {
        fid: (root + e.path, e.size, e.mode, e.uid, e.gid, e.mtime_ns, True)
        for fid, e in ((fid, entries[fid]) for fid in {fid for fid, _ref in recs})
    }
    dirs = sorted({os.path.dirname(f[0]) for f in files.values()})
    for _ in range(args.rounds):
        for name in os.listdir(root):
            shutil.rmtree(os.path.join(root, name))
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        if args.null:
            deliver, finish = (lambda *_a: None), (lambda: None)
        else:
            results = reader._Results(
                _Quiet(), build(DirectorySinkSpec(files, root, ""), None), recs
            )
            deliver, finish = results.deliver, results.finish
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        start = time.process_time()
        reader.read_records(dev, bytes.fromhex(sid), recs, deliver, label=label, idents=sel.idents)
        finish()
        used = time.process_time() - start
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        kind = "none" if args.null else "directory"
        print(f"{len(recs)} records, sink {kind}: {used:.3f} CPU s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

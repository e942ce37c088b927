"""Benchmark 4 (scale): a million small files, and one 8 GiB file.

    sudo .venv/bin/python bench/scale.py                   # 1,000,000 files + 8 GiB file
    sudo .venv/bin/python bench/scale.py --files 20000 --big 1G    # a quick try

Many files: a tree of ``--files`` files of 0-1023 bytes in 1000-file directories, on its
own tmpfs, backed up onto 2 tmpfs devices. Reports the planning time (scan and plan
measured apart, in-process, as ``parbackup plan`` does them), the dry-run ``parbackup
plan`` as a process, the backup (wall, files/s, CPU, peak RSS), the catalog size, and
``tar -cf`` of the same tree onto one device as a reference.

One big file: a sparse file of ``--big`` bytes (reads cost no memory), backed up onto 2
tmpfs devices; peak RSS is the figure that matters (bounded buffers, W3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import (
    SRC,
    conditions,
    parbackup_argv,
    parbackup_env,
    run,
    table,
    tmpfs,
)

sys.path.insert(0, str(SRC))

from parbackup.devices.url import parse_size


def make_files(root: str, count: int) -> int:
    """``count`` files of 0-1023 bytes, 1000 per directory; returns their total bytes."""
    blob = os.urandom(1024)
    total = 0
    for i in range(count):
        d = os.path.join(root, f"d{i // 1000:04d}")
        if i % 1000 == 0:
            os.mkdir(d)
        size = (i * 7919) % 1024
        fd = os.open(os.path.join(d, f"f{i:07d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if size:
            os.write(fd, blob[:size])
        os.close(fd)
        total += size
    return total


def plan_timings(src: str, devs: list[str]) -> dict:
    """Scan and plan in this process, timed apart (what ``parbackup plan`` runs), and the
    memory the columnar entries and plan take. The scan of a large tree shares its walk
    with one helper process (engine/splitscan.py), as in a backup."""
    from parbackup.engine.devices import close_all, open_devices
    from parbackup.engine.prepare import make_plan, scan, source_specs
    from parbackup.engine.report import BackupOptions

    t0 = time.perf_counter()
    entries = scan(source_specs([src]), [])
    t1 = time.perf_counter()
    alive, _ = open_devices(devs, create_labels=False, require_label=False)
    t2 = time.perf_counter()
    the_plan = make_plan(entries, [d.space for d in alive], BackupOptions())
    t3 = time.perf_counter()
    close_all(alive)
    plan_bytes = sum(a.itemsize * len(a) for a in (the_plan.file, the_plan.offset,
                                                   the_plan.size, the_plan.device))  # fmt: skip
    return {
        "entries": len(entries),
        "scan": t1 - t0,
        "plan": t3 - t2,
        "items": len(the_plan),
        "entries_mb": entries.nbytes() / 1e6,
        "plan_mb": plan_bytes / 1e6,
    }


def many_files(args, w: str) -> list[list[str]]:
    rows = []
    with (
        tmpfs(f"{w}/src", "8G") as src,
        tmpfs(f"{w}/dev1", "4G") as dev1,
        tmpfs(f"{w}/dev2", "4G") as dev2,
        tmpfs(f"{w}/state", "4G") as state,
    ):
        started = time.perf_counter()
        nbytes = make_files(src, args.files)
        print(
            f"created {args.files} files in {time.perf_counter() - started:.1f}s", file=sys.stderr
        )
        entries = args.files + args.files // 1000 + (1 if args.files % 1000 else 0) + 1
        timings = plan_timings(src, [dev1, dev2])
        rows.append(["scan (in-process)", f"{timings['scan']:.2f}", "", "", "", ""])
        rows.append(["plan (in-process, pure planner)", f"{timings['plan']:.2f}", "", "", "", ""])
        rows.append(
            ["scan + plan (in-process)", f"{timings['scan'] + timings['plan']:.2f}", "", "", "",
             f"entries {timings['entries_mb']:.0f} MB, plan {timings['plan_mb']:.0f} MB"]
        )  # fmt: skip
        catalog = f"{state}/catalog.sqlite"
        env = parbackup_env(catalog)
        m = run(
            "parbackup plan (dry run)", parbackup_argv("plan", src, "-d", dev1, "-d", dev2), env=env
        )
        rows.append(
            [
                m.name,
                f"{m.wall:.2f}",
                f"{entries / m.wall:.0f}",
                f"{m.cpu:.2f}",
                m.memory,
                "",
            ]
        )
        m = run(
            "parbackup backup (2 devices)",
            parbackup_argv("backup", src, "-d", dev1, "-d", dev2, "--json"),
            env=env,
        )
        doc = json.loads(m.out)
        assert doc["status"] == "complete", doc
        size = os.path.getsize(catalog)
        rows.append(
            [m.name, f"{m.wall:.2f}", f"{entries / m.wall:.0f}", f"{m.cpu:.2f}", m.memory,
             f"catalog {size / 1e6:.0f} MB ({size / entries:.0f} B/entry)"]
        )  # fmt: skip
        for d in (dev1, dev2):
            for name in os.listdir(d):
                os.system(f"rm -rf {d}/{name}")
        m = run("tar -cf (1 device)", ["tar", "-cf", f"{dev1}/t.tar", "-C", src, "."])
        rows.append(
            [
                m.name,
                f"{m.wall:.2f}",
                f"{entries / m.wall:.0f}",
                f"{m.cpu:.2f}",
                m.memory,
                "",
            ]
        )
    print(f"\n{args.files} files ({entries} entries, {nbytes / 1e6:.0f} MB). {conditions()}\n")
    print(table(["step", "wall s", "entries/s", "CPU s", "peak RSS (sum) / PSS MB", "notes"], rows))
    return rows


def big_file(args, w: str) -> None:
    size = parse_size(args.big)
    half = f"{size // 2 // (1 << 20) + 512}M"
    with (
        tmpfs(f"{w}/bsrc", "1G") as src,
        tmpfs(f"{w}/bdev1", half) as dev1,
        tmpfs(f"{w}/bdev2", half) as dev2,
        tmpfs(f"{w}/bstate", "1G") as state,
    ):
        path = os.path.join(src, "big.img")
        with open(path, "wb") as fh:
            fh.truncate(size)
        env = parbackup_env(f"{state}/catalog.sqlite")
        m = run(
            "parbackup backup, one sparse file (2 devices)",
            parbackup_argv("backup", path, "-d", dev1, "-d", dev2, "--json"),
            env=env,
        )
        assert json.loads(m.out)["status"] == "complete"
    print(f"\nOne {size / (1 << 30):.1f} GiB file. {conditions()}\n")
    print(
        table(
            ["step", "wall s", "MB/s", "CPU s", "peak RSS (sum) / PSS MB"],
            [
                [
                    m.name,
                    f"{m.wall:.2f}",
                    f"{m.rate(size):.0f}",
                    f"{m.cpu:.2f}",
                    m.memory,
                ]
            ],
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--big", default="8GiB")
    ap.add_argument("--work", default="/tmp/pbscale")
    ap.add_argument("--skip", default="", help="'files' or 'big' to skip that part")
    args = ap.parse_args()
    if args.skip != "files":
        many_files(args, args.work)
    if args.skip != "big":
        big_file(args, args.work)


if __name__ == "__main__":
    main()

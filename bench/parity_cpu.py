"""Where the CPU that ``--parity 1`` adds to a backup goes (issue 12): whole backups
under ``perf record``, every sample put in one category, parity minus plain.

    .venv/bin/python bench/parity_cpu.py --work /tmp/NAME/pcpu --size 512 --rounds 3

Each round runs the backup of ``--size`` MiB of random files (16 files) onto 3 devices,
then with ``--parity 1`` onto 4 (every device a directory on one tmpfs), each under
``perf record -F 1999 -g`` over the whole process tree. A sample is counted by its
innermost frame: the kernel under a ``write`` call (copy into the page cache, and the
rest), under a ``preadv`` (the source read), elsewhere; the interpreter; BLAKE3; XXH3;
ISA-L; ``memmove`` (parity: the copy into the shared slots). Per category it prints the
median samples of plain and parity runs and their difference, in CPU seconds. Samples
are taken on CPU time (``cpu-clock``), so the load of other processes changes them far
less than it changes walls; perf's own cost is in both kinds alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from collections import Counter

from common import parbackup_argv, parbackup_env, random_file, tmpfs, wipe

FREQ = 1999


def category(frames: list[str]) -> str:
    """One sample's category from its frames ("symbol+off (dso)"), innermost first."""
    leaf = frames[0]
    if "[kernel" in leaf:
        if any("libc_write" in f or "__write" in f for f in frames):
            return "kernel: write (copy)" if "copy_folio_from_iter" in leaf else "kernel: write"
        if any("preadv" in f or "pread" in f for f in frames):
            return "kernel: read"
        return "kernel: other"
    for key, name in (
        ("libpython", "interpreter"),
        ("blake3", "BLAKE3"),
        ("xxhash", "XXH3"),
        ("isal", "ISA-L"),
        ("memmove", "memmove"),
    ):
        if key in leaf:
            return name
    return "other"


def profile(argv: list[str], env: dict, out: str) -> Counter:
    """Run ``argv`` under perf; the samples of each category."""
    subprocess.run(
        ["perf", "record", "-q", "-F", str(FREQ), "-g", "-o", out, "--", *argv],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    text = subprocess.run(
        ["perf", "script", "-i", out, "-F", "tid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got: Counter = Counter()
    for block in text.split("\n\n"):
        frames = [
            p[1] for p in (line.split(None, 1) for line in block.splitlines()[1:]) if len(p) == 2
        ]
        if frames:
            got[category(frames)] += 1
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/pbparitycpu", help="where the tmpfs goes")
    ap.add_argument("--size", type=int, default=512, help="MiB of source data")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = f"{args.size * 3 + 600}M"  # source, 4/3 of it on the devices, perf data
    with tmpfs(args.work, tmp) as w:
        src, state = os.path.join(w, "src"), os.path.join(w, "state")
        devs = [os.path.join(w, f"d{i}") for i in range(4)]
        for d in (src, state, *devs):
            os.makedirs(d)
        for i in range(16):
            random_file(os.path.join(src, f"f{i:02d}.bin"), (args.size << 20) // 16, seed=i)
        env = parbackup_env(os.path.join(state, "catalog.sqlite"))
        runs: dict[str, list[Counter]] = {"plain": [], "parity": []}
        for r in range(args.rounds):
            for kind in runs:
                for d in (state, *devs):
                    wipe(d)
                on = devs[:3] if kind == "plain" else devs
                extra = ["--parity", "1"] if kind == "parity" else []
                argv = parbackup_argv("backup", src, *(x for d in on for x in ("-d", d)), *extra)
                runs[kind].append(profile(argv, env, os.path.join(w, "perf.data")))
            totals = ", ".join(f"{k} {sum(v[-1].values()) / FREQ:.2f}" for k, v in runs.items())
            print(f"round {r + 1}: CPU s {totals}; load {os.getloadavg()[0]:.1f}")
    names = sorted({c for v in runs.values() for x in v for c in x})
    print(f"\n{'category':24} {'plain':>7} {'parity':>7} {'added':>7}  (CPU s, medians)")
    for name in [*names, "all"]:
        plain, parity = (
            statistics.median(sum(x.values()) if name == "all" else x[name] for x in runs[k]) / FREQ
            for k in ("plain", "parity")
        )
        print(f"{name:24} {plain:7.3f} {parity:7.3f} {parity - plain:+7.3f}")


if __name__ == "__main__":
    main()

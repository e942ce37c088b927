"""One large sparse file, versions of parbackup in alternating rounds: wall, CPU, memory.

    sudo .venv/bin/python bench/big_file.py --work /tmp/NAME/big --rounds 3 \\
        old=/tmp/NAME/old/src new=src
    sudo .venv/bin/python bench/big_file.py --work /tmp/NAME/big --size 4GiB \\
        --devices 4 --parity 1 --rounds 1 new=src

Each round backs one sparse file of ``--size`` (reading it costs no memory) up onto
``--devices`` fresh tmpfs devices with every version in turn, the order reversed every
other round (bench/pairs.py says why). With ``--parity M`` each backup is followed by a
restore of the set and one with the first device's volumes hidden (read around it
through parity), each checked against the source. Peak RSS is summed over the process
tree (the fork server, movers and readers included) with the summed PSS beside it, as
bench/common.py measures every tool; writing GBs into fresh tmpfs pages is what swings
the walls on this VM (BENCHMARKS.md, session 13), so compare versions within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys

from common import PY, SRC, Measured, conditions, run, table, tmpfs, wipe

sys.path.insert(0, str(SRC))
from parbackup.devices.url import parse_size


def parbackup(src: str, catalog: str, *args: str) -> Measured:
    """``parbackup ARGS --json`` with the code in ``src``, measured."""
    argv = [PY, "-m", "parbackup", *args, "--json"]
    m = run(args[0], argv, env={"PYTHONPATH": src, "PARBACKUP_CATALOG": catalog}, check=False)
    if m.code not in (0, 3):
        raise SystemExit(f"{args[0]} exited {m.code}: {m.out[-2000:]}")
    return m


def same_size_zeros(path: str, size: int) -> bool:
    """The restored copy of the sparse source: ``size`` bytes, all zero."""
    if os.path.getsize(path) != size:
        return False
    zero = bytes(1 << 24)
    with open(path, "rb") as fh:
        while chunk := fh.read(len(zero)):
            if chunk != zero[: len(chunk)]:
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="+", help="NAME=SRC_DIR")
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go")
    ap.add_argument("--size", default="8GiB")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--parity", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size)
    versions = [v.split("=", 1) for v in args.versions]
    k = args.devices - args.parity
    dev_size = f"{size // k // (1 << 20) + 512}M"
    w, n = args.work, args.devices
    rows: dict[str, list[list[Measured]]] = {name: [] for name, _src in versions}
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(tmpfs(f"{w}/src", "64M"))
        state = stack.enter_context(tmpfs(f"{w}/state", "1G"))
        mounted = [stack.enter_context(tmpfs(f"{w}/d{i}", dev_size)) for i in range(n)]
        target = ""
        if args.parity:
            target = stack.enter_context(tmpfs(f"{w}/target", f"{size // (1 << 20) + 256}M"))
        path = os.path.join(src, "big.img")
        with open(path, "wb") as fh:
            fh.truncate(size)
        devs = [os.path.join(d, "dev") for d in mounted]
        for r in range(args.rounds):
            for name, code in versions if r % 2 == 0 else versions[::-1]:
                for d in [*mounted, state]:
                    wipe(d)
                for d in devs:
                    os.makedirs(d)
                cat = os.path.join(state, "c.sqlite")
                argv = ["backup", path, *[x for d in devs for x in ("-d", d)]]
                runs = [
                    parbackup(
                        code, cat, *argv, *(["--parity", str(args.parity)] * bool(args.parity))
                    )
                ]
                if args.parity:
                    for hide in (False, True):
                        if hide:
                            os.rename(devs[0], devs[0] + ".hidden")
                        runs.append(parbackup(code, cat, "restore", "--target", target))
                        if not same_size_zeros(os.path.join(target, path.lstrip("/")), size):
                            raise SystemExit(f"{name}: the restore differs from the source")
                        wipe(target)
                rows[name].append(runs)
                print(f"round {r} {name}: " + "; ".join(
                    f"{m.name} wall {m.wall:.2f} s, CPU {m.cpu:.2f} s, RSS/PSS {m.memory} MB"
                    for m in runs), flush=True)  # fmt: skip
    kinds = ["backup"] + (["restore", "restore, a device missing"] if args.parity else [])
    out = []
    for name, per_round in rows.items():
        for i, kind in enumerate(kinds):
            ms = [runs[i] for runs in per_round]
            wall = statistics.median(m.wall for m in ms)
            cpu = statistics.median(m.cpu for m in ms)
            peak = f"{max(m.rss_mb for m in ms):.0f} / {max(m.pss_mb for m in ms):.0f}"
            out.append([name, kind, f"{wall:.2f}", f"{size / wall / 1e6:.0f}", f"{cpu:.2f}", peak])
    with_parity = f" (--parity {args.parity})" if args.parity else ""
    print(
        f"\nOne {size / (1 << 30):.1f} GiB sparse file onto {n} tmpfs devices{with_parity};"
        f" medians of {args.rounds} round(s), the highest peak. {conditions()}\n"
    )
    print(table(["version", "run", "wall s", "MB/s", "CPU s", "peak RSS (sum) / PSS MB"], out))
    print(json.dumps({n: [[m.wall for m in r] for r in v] for n, v in rows.items()}))


if __name__ == "__main__":
    main()

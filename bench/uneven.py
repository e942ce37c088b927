"""Benchmark 3 (uneven devices): ``--balance bytes`` against ``--balance time``.

    sudo .venv/bin/python bench/uneven.py              # 3 devices at 40, 20, 10 MB/s
    sudo .venv/bin/python bench/uneven.py --small      # a quick try

Three devices, each its own tmpfs, held to different rates by parbackup's own ``?limit=``
token-bucket wrapper (a stand-in for slow links or disks: on this machine no real device
is slow, and no netns SFTP benchmark was at hand when this was written). The ideal time is
total bytes / sum of rates: what a perfect split finishing all devices together takes.

Runs, each on empty devices:
  bytes          --balance bytes (equal shares): the slowest device sets the pace
  time/url       --balance time with ?speed= equal to each device's real rate
  time/catalog   --balance time with speeds the catalog measured in the bytes run
  time/probe     --balance time with a fresh catalog: each device gets a probe write
  time/wrong     --balance time told all devices are equally fast (?speed=30M each):
                 only the run-time pacing (moving not-started work) can save it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from common import (
    conditions,
    parbackup_argv,
    parbackup_env,
    random_file,
    run,
    table,
    tmpfs,
)

RATES = [40e6, 20e6, 10e6]


def build(src: str, small: bool) -> int:
    """Random files of mixed sizes plus a copy of /usr/share/doc; returns total bytes."""
    big = 4 if small else 8
    for i in range(big):
        random_file(os.path.join(src, f"r{i}.bin"), (8 if small else 32) << 20, seed=i)
    if not small:
        shutil.copytree("/usr/share/doc", os.path.join(src, "doc"), symlinks=True)
    total = 0
    for dirpath, _dirs, names in os.walk(src):
        for n in names:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--work", default="/tmp/pbuneven")
    args = ap.parse_args()
    w = args.work
    rates = [r / 8 for r in RATES] if args.small else RATES
    rows = []
    with (
        tmpfs(f"{w}/src", "2G") as src,
        tmpfs(f"{w}/a", "1G") as a,
        tmpfs(f"{w}/b", "1G") as b,
        tmpfs(f"{w}/c", "1G") as c,
        tmpfs(f"{w}/state", "256M") as state,
    ):
        nbytes = build(src, args.small)
        devs = [a, b, c]
        ideal = nbytes / sum(rates)
        limit = [f"limit={r:.0f}" for r in rates]

        def backup(name: str, urls: list[str], catalog: str, *extra: str) -> None:
            for d in devs:  # keep each device's label, so the catalog knows it next time
                for sub in ("sets", "catalog"):
                    shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
            argv = ["backup", src, *[x for u in urls for x in ("-d", u)], "--json", *extra]
            m = run(name, parbackup_argv(*argv), env=parbackup_env(catalog))
            doc = json.loads(m.out)
            assert doc["status"] == "complete", doc
            per = doc["devices"]
            finish = " / ".join(f"{d.get('finished', 0):.1f}" for d in per)
            predicted = " / ".join(
                f"{d['predicted']:.1f}" if "predicted" in d else "-" for d in per
            )
            shares = " / ".join(f"{d['bytes'] / nbytes:.0%}" for d in per)
            moved = sum(sum(d.get("moved", {}).values()) for d in per)
            rows.append(
                [name, f"{m.wall:.2f}", f"{m.wall / ideal:.2f}", shares, predicted, finish,
                 f"{moved / 1e6:.0f}"]
            )  # fmt: skip
            print(rows[-1], file=sys.stderr)

        cat1 = f"{state}/c1.sqlite"
        backup("bytes", [f"{d}?{q}" for d, q in zip(devs, limit, strict=True)], cat1)
        hinted = [f"{d}?{q}&speed={r:.0f}" for d, q, r in zip(devs, limit, rates, strict=True)]
        backup("time/url", hinted, f"{state}/c2.sqlite", "--balance", "time")
        plain = [f"{d}?{q}" for d, q in zip(devs, limit, strict=True)]
        backup("time/catalog", plain, cat1, "--balance", "time")
        backup("time/probe", plain, f"{state}/c3.sqlite", "--balance", "time")
        wrong = [f"{d}?{q}&speed=30M" for d, q in zip(devs, limit, strict=True)]
        backup("time/wrong", wrong, f"{state}/c4.sqlite", "--balance", "time")
    print(
        f"\n{nbytes / 1e6:.0f} MB onto 3 devices held to "
        f"{', '.join(f'{r / 1e6:.0f}' for r in rates)} MB/s; ideal {ideal:.2f}s "
        f"(bytes / sum of rates). {conditions()}\n"
    )
    print(
        table(
            ["run", "wall s", "wall / ideal", "shares", "predicted s", "finished s", "moved MB"],
            rows,
        )
    )


if __name__ == "__main__":
    main()

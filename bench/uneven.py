"""Benchmark 3 (uneven devices): ``--balance bytes`` against ``--balance time``.

    sudo .venv/bin/python bench/uneven.py --sftp       # 3 SFTP hosts at 80, 40, 20 mbit/s
    sudo .venv/bin/python bench/uneven.py              # 3 local devices at 40, 20, 10 MB/s
    sudo .venv/bin/python bench/uneven.py --small      # a quick try

``--sftp``: three distant hosts, each a network namespace joined by a veth pair with
``tc qdisc ... tbf`` shaping both ends at a different rate, each running its own sshd
(tests/servers.py); devices are real SFTP URLs. Without it: three local devices, each its
own tmpfs, held to different rates by parbackup's own ``?limit=`` token-bucket wrapper (a
stand-in for slow disks). The ideal time is total bytes / sum of rates: what a perfect
split finishing all devices together takes. "wall" includes starting Python, connecting,
labels and the catalog copy; "last finish" is when the last device committed, counted
from the start of writing (nominal link rates: TCP and SSH overhead make
the real ceiling a little lower).

Runs, each on empty devices:
  bytes          --balance bytes (equal shares): the slowest device sets the pace
  time/url       --balance time with ?speed= equal to each device's real rate
  time/catalog   --balance time with speeds the catalog measured in the bytes run
  time/probe     --balance time with a fresh catalog: each device gets a probe write
  time/wrong     --balance time told every device is as fast as the fastest (?speed=):
                 only the run-time pacing (moving not-started work) can save it
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

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
LINKS = ["80mbit", "40mbit", "20mbit"]
ROOT = Path(__file__).resolve().parent.parent


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


@contextlib.contextmanager
def sftp_hosts(work: str, links: list[str]):
    """(device directories, URL builders) for one shaped netns SFTP host per link rate."""
    sys.path[:0] = [str(ROOT / "tests")]
    from servers import NetnsHost, SshServer

    if not NetnsHost.available():
        raise SystemExit("--sftp needs root and ip netns")
    base = Path(tempfile.mkdtemp(prefix="pbuneven-", dir="/var/tmp"))
    with contextlib.ExitStack() as stack:
        dirs, urls = [], []
        for i, link in enumerate(links, 1):
            host = stack.enter_context(NetnsHost(i, rate=link))
            ssh = stack.enter_context(
                SshServer(base / f"ssh{i}", host=host.ip, port=2222, netns=host.name)
            )
            d = base / f"dev{i}"
            d.mkdir()
            dirs.append(str(d))
            urls.append(lambda query, ssh=ssh, d=d: ssh.url(d, query))
        try:
            yield dirs, urls
        finally:
            stack.close()
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def local_devices(work: str, rates: list[float]):
    """(device directories, URL builders) for tmpfs devices held to ``rates``."""
    with (
        tmpfs(f"{work}/a", "1G") as a,
        tmpfs(f"{work}/b", "1G") as b,
        tmpfs(f"{work}/c", "1G") as c,
    ):
        dirs = [a, b, c]
        yield (
            dirs,
            [
                lambda query, d=d, r=r: f"{d}?limit={r:.0f}" + (f"&{query}" if query else "")
                for d, r in zip(dirs, rates, strict=True)
            ],
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--sftp", action="store_true", help="shaped netns SFTP hosts")
    ap.add_argument("--work", default="/tmp/pbuneven")
    args = ap.parse_args()
    w = args.work
    if args.sftp:
        links = [f"{int(x[:-4]) // (8 if args.small else 1)}mbit" for x in LINKS]
        rates = [int(x[:-4]) * 1e6 / 8 for x in links]
        devices = sftp_hosts(w, links)
    else:
        rates = [r / 8 for r in RATES] if args.small else RATES
        devices = local_devices(w, rates)
    rows = []
    with (
        tmpfs(f"{w}/src", "2G") as src,
        tmpfs(f"{w}/state", "256M") as state,
        devices as (devs, url),
    ):
        nbytes = build(src, args.small)
        ideal = nbytes / sum(rates)

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
            last = max(d.get("finished", 0) for d in per)
            rows.append(
                [name, f"{m.wall:.2f}", f"{m.wall / ideal:.2f}", f"{last / ideal:.2f}", shares,
                 predicted, finish, f"{moved / 1e6:.0f}"]
            )  # fmt: skip
            print(rows[-1], file=sys.stderr)

        cat1 = f"{state}/c1.sqlite"
        plain = [u("") for u in url]
        backup("bytes", plain, cat1)
        hinted = [u(f"speed={r:.0f}") for u, r in zip(url, rates, strict=True)]
        backup("time/url", hinted, f"{state}/c2.sqlite", "--balance", "time")
        backup("time/catalog", plain, cat1, "--balance", "time")
        backup("time/probe", plain, f"{state}/c3.sqlite", "--balance", "time")
        wrong = [u(f"speed={max(rates):.0f}") for u in url]
        backup("time/wrong", wrong, f"{state}/c4.sqlite", "--balance", "time")
    kind = "SFTP hosts over tbf-shaped netns links" if args.sftp else "tmpfs devices, ?limit="
    print(
        f"\n{nbytes / 1e6:.0f} MB onto 3 {kind} at "
        f"{', '.join(f'{r / 1e6:.1f}' for r in rates)} MB/s; ideal {ideal:.2f}s "
        f"(bytes / sum of rates). {conditions()}\n"
    )
    print(
        table(
            [
                "run",
                "wall s",
                "wall / ideal",
                "last finish / ideal",
                "shares",
                "predicted s",
                "finished s",
                "moved MB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

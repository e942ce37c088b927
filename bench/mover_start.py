"""The movers' CPU before the set begins (their start), in the data phase and after,
for one or more checkouts in alternating rounds (issue 10, session 9, mover9 helper).

    .venv/bin/python bench/mover_start.py TREE ROUNDS --work /tmp/NAME/ms [SRC ...]

Each round backs TREE up onto two fresh tmpfs devices under bench/timeline.py's poller
once per ``SRC`` (default: this checkout's src) and prints the controller's CPU, the
movers' CPU split at "set begun" and "every device committed", and every other process's
(the movers' fork server), then the medians. Needs root (tmpfs mounts).
"""

import argparse
import contextlib
import os
import statistics

from common import SRC, tmpfs
from timeline import phases_of, run_once

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("tree")
ap.add_argument("rounds", type=int)
ap.add_argument("srcs", nargs="*", default=[str(SRC)])
ap.add_argument("--work", required=True)
args = ap.parse_args()
tree, n, srcs, w = args.tree, args.rounds, args.srcs, args.work
os.makedirs(w, exist_ok=True)
rows = {s: [] for s in srcs}
for _ in range(n):
    for s in srcs:
        with contextlib.ExitStack() as st:
            devs = [st.enter_context(tmpfs(f"{w}/dev{k}", "1500M")) for k in range(2)]
            state = st.enter_context(tmpfs(f"{w}/state", "200M"))
            r = run_once(tree, devs, f"{state}/c.sqlite", [], s)
        p = phases_of(r)
        a, b = p["begun"], p["committed"]
        movers = [x for x in r["procs"] if x.name == "mover"]
        ctl = [x for x in r["procs"] if x.name == "controller"]
        pre = sum(x.busy_between(0, a) for x in movers)
        mid = sum(x.busy_between(a, b) for x in movers)
        post = sum(x.busy_between(b, 1e9) for x in movers)
        c = sum(x.cpu for x in ctl)
        others = sum(x.cpu for x in r["procs"] if x.name not in ("mover", "controller"))
        rows[s].append((r["wall"], c, pre, mid, post, others))
        print(
            f"{s[-30:]:30} wall {r['wall']:.3f} ctl {c:.3f} movers pre {pre:.3f}"
            f" data {mid:.3f} post {post:.3f} other {others:.3f}"
            f" total {c + pre + mid + post + others:.3f}",
            flush=True,
        )
for s, rs in rows.items():
    med = [statistics.median(col) for col in zip(*rs, strict=True)]
    print("median", s[-30:], " ".join(f"{v:.3f}" for v in med), "(wall ctl pre data post other)")

"""A timeline of one backup run: which process runs when, from exec to exit.

    sudo .venv/bin/python bench/timeline.py --work /tmp/NAME/tl            # bench/local.py's tree
    sudo .venv/bin/python bench/timeline.py --work /tmp/NAME/tl --tree DIR --devices 2

Runs ``parbackup -vv backup TREE -d DEV... --json`` (devices: fresh tmpfs mounts under
``--work``; the tree is built there too unless ``--tree`` names one) and polls
``/proc`` every millisecond or so for every process of the run (controller, movers, scan
helper, fork server): when it was first and last seen, and its CPU time from
``/proc/PID/schedstat`` (nanoseconds, not clock ticks). The controller's phase lines
(``-vv``: "scanned", "planned and labelled", "every device committed", ...) are stamped
with the exec-relative time they were logged at. Prints

- one line per process: first seen, last seen, CPU seconds, and the moments its CPU use
  began and ended;
- the phases of the controller, exec-relative;
- a strip per process in bins of ``--bin`` seconds: its share of a core in each bin
  (" " idle, "." < 25%, ":" < 50%, "+" < 75%, "#" more);
- the serial part: the time from exec until a mover first wrote (its CPU rose while a
  mover's work had begun), and from the last mover's commit to exit.

A measuring tool: the backup runs as it always does, only its log lines get a precise
time stamp (a wrapper around the CLI sets the log formatter's clock format).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from common import PY, SRC, conditions, tmpfs, tree_stats

_WRAPPER = (
    "import time, sys, logging\n"
    "try:\n"  # the fork server started first, as the entry points do (cli/early.py)
    "    from parbackup.cli.early import warm\n"
    "    warm(sys.argv[1:])\n"
    "except ImportError:\n"  # a version without it warms it in cli/main.py
    "    pass\n"
    "import parbackup.cli.logs as logs\n"
    "logs._UTCFormatter.formatTime = lambda self, record, datefmt=None: f'{record.created:.6f}'\n"
    "from parbackup.cli.main import main\n"
    "sys.argv[0] = 'parbackup'\n"
    "main()\n"
)


@dataclass
class Proc:
    """What the poller saw of one process."""

    pid: int
    name: str
    first: float
    last: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    """(time since exec, CPU nanoseconds so far)."""

    @property
    def cpu(self) -> float:
        return self.samples[-1][1] / 1e9 if self.samples else 0.0

    def busy_between(self, a: float, b: float) -> float:
        """CPU seconds spent between ``a`` and ``b`` (interpolated between samples)."""
        return (self._cpu_at(b) - self._cpu_at(a)) / 1e9

    def _cpu_at(self, t: float) -> float:
        s = self.samples
        if not s or t <= s[0][0]:
            return s[0][1] if s else 0
        if t >= s[-1][0]:
            return s[-1][1]
        lo, hi = 0, len(s) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if s[mid][0] <= t:
                lo = mid
            else:
                hi = mid
        (t0, c0), (t1, c1) = s[lo], s[hi]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

    def active(self, threshold: float = 0.002) -> tuple[float, float]:
        """The first and last moments it used CPU, after its first ``threshold`` s."""
        s = self.samples
        if len(s) < 2:
            return (self.first, self.last)
        base = s[0][1]
        start = next((t for t, c in s if c - base > threshold * 1e9), self.first)
        end = s[-1][0]
        top = s[-1][1]
        for t, c in reversed(s):
            if top - c > threshold * 1e9:
                break
            end = t
        return start, end


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


COMMS = {"move": "mover", "scan_part": "scan helper", "forkserver": "fork server"}
"""Process names (``comm``) the workers and the fork server give themselves
(workers.py ``name_process``): a forked worker's command line is its server's."""


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _name(pid: int) -> str:
    if (comm := _comm(pid)) in COMMS:
        return COMMS[comm]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    for pattern, name in (
        (r"engine\.mover:move", "mover"),
        (r"forkserver", "fork server"),  # before: it may preload the split scan
        (r"splitscan|scan_part", "scan helper"),
        (r"workers import main", "worker"),
        (r"parbackup", "controller"),
    ):
        if re.search(pattern, text):
            return name
    return text[:40]


def _schedstat(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Poller(threading.Thread):
    """Polls the process tree below ``root`` until ``stop``."""

    def __init__(self, root: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.root, self.t0 = root, t0
        self.procs: dict[int, Proc] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.perf_counter() - self.t0
            todo, seen = [(self.root, 0)], []
            while todo:
                pid, parent = todo.pop()
                seen.append((pid, parent))
                todo += [(child, pid) for child in _children(pid)]
            for pid, parent in seen:
                ns = _schedstat(pid)
                if ns is None:
                    continue
                proc = self.procs.get(pid)
                if proc is None:
                    proc = self.procs[pid] = Proc(pid, "?", now)
                if proc.name in ("", "?", "controller", "fork server") or proc.name.startswith("/"):
                    proc.name = _name(pid) if pid != self.root else "controller"
                    above = self.procs.get(parent)
                    if proc.name == "fork server" and above and above.name == "fork server":
                        # a worker forked by the server, not yet named after its function
                        # (``COMMS``: asked again); a version that names none forks movers
                        proc.name = "?" if _comm(pid) == "forkserver" else "mover"
                proc.last = now
                proc.samples.append((now, ns))
            time.sleep(0.001)


def run_once(
    tree: str, devices: list[str], catalog: str, extra: list[str], src: str = str(SRC)
) -> dict:
    """One backup under the poller (parbackup from ``src``); the figures of its timeline."""
    argv = [PY, "-c", _WRAPPER, "-vv", "backup", tree]
    for d in devices:
        argv += ["-d", d]
    argv += ["--json", *extra]
    env = {**os.environ, "PYTHONPATH": src, "PARBACKUP_CATALOG": catalog}
    t0 = time.perf_counter()
    wall0 = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    poller = Poller(proc.pid, t0)
    poller.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    poller.done.set()
    poller.join()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"backup failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    phases = []
    for line in err.decode(errors="replace").splitlines():
        match = re.match(r"(\d+\.\d+) DEBUG (\S+): (.*)", line)
        if match:
            stamp, where, text = match.groups()
            phases.append((float(stamp) - wall0, where.rsplit(".", 1)[-1], text))
    return {
        "wall": wall,
        "report": json.loads(out),
        "procs": sorted(poller.procs.values(), key=lambda p: p.first),
        "phases": phases,
    }


def show(result: dict, bin_s: float) -> None:
    wall, procs = result["wall"], result["procs"]
    print(f"wall {wall:.3f} s (exec to exit, seen from the parent)")
    print("\nprocess        first s   last s   CPU s   CPU from .. to")
    for p in procs:
        a, b = p.active()
        print(f"{p.name:<13} {p.first:8.3f} {p.last:8.3f} {p.cpu:7.3f}   {a:.3f} .. {b:.3f}")
    print("\ncontroller phases (exec-relative s):")
    for t, where, text in result["phases"]:
        print(f"  {t:7.3f}  {where}: {text[:100]}")
    devices = result["report"].get("devices", [])
    for d in devices:
        print(f"  device {d['url']}: seconds {d.get('seconds')} finished {d.get('finished')}")
    bins = int(wall / bin_s) + 1
    print(f"\nshare of a core per {bin_s * 1000:.0f} ms (' ' idle . <25% : <50% + <75% # more)")
    marks = "".join(str(i % 10) if i % 10 == 0 else "." for i in range(bins))
    print(f"{'time (x' + str(bin_s * 10) + ' s)':<14} |{marks}|")
    for p in procs:
        strip = []
        for i in range(bins):
            a, b = i * bin_s, (i + 1) * bin_s
            if b < p.first or a > p.last:
                strip.append(" ")
                continue
            share = p.busy_between(a, b) / bin_s
            strip.append(" " if share < 0.02 else "." if share < 0.25 else ":" if share < 0.5
                         else "+" if share < 0.75 else "#")  # fmt: skip
        print(f"{p.name:<14} |{''.join(strip)}|")
    movers = [p for p in procs if p.name == "mover"]
    if movers:
        start = min(m.first for m in movers)
        # a mover's data work: its CPU after the first 5 ms of CPU beyond its start-up
        begin = min(_work_start(m) for m in movers)
        end = max(m.active()[1] for m in movers)
        print(
            f"\nmovers started at {start:.3f} s; their data work began at {begin:.3f} s and"
            f" ended at {end:.3f} s; after that {wall - end:.3f} s to exit"
        )


def _work_start(p: Proc) -> float:
    """When a mover began to move data: the first 50 ms bin in which it used > half a
    core, after its start-up."""
    step = 0.05
    t = p.first
    while t < p.last:
        if p.busy_between(t, t + step) > step / 2 and p.busy_between(p.first, t) > 0.05:
            return t
        t += step
    return p.last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="where the tmpfs mounts go")
    ap.add_argument("--tree", default="", help="back up this tree (default: build local.py's)")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--size", default="4G", help="size of each device's tmpfs")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bin", type=float, default=0.05, help="seconds per column of the strips")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    ap.add_argument("--src", default=str(SRC), help="parbackup's sources (another checkout)")
    ap.add_argument(
        "--versions",
        nargs="*",
        default=[],
        metavar="NAME=SRC",
        help="alternate these versions' runs (--runs rounds) and print a table of their phases",
    )
    ap.add_argument("extra", nargs="*", help="more backup options (after --)")
    args = ap.parse_args()
    w = args.work
    results = []
    with tmpfs(f"{w}/state", "1G") as state:
        if args.tree:
            tree = args.tree
            runs = _runs(args, w, state, tree)
        else:
            from local import build_tree

            with tmpfs(f"{w}/src", "6G") as src:
                build_tree(src, False)
                tree = src
                runs = _runs(args, w, state, tree)
        results.extend(runs)
    files, nbytes = tree_stats(tree) if args.tree else (0, 0)
    print(f"tree {tree}: {files} files, {nbytes / 1e6:.0f} MB. {conditions()}")
    for r in results:
        if r.get("version"):
            print(f"\n== {r['version']}")
        show(r, args.bin)
    if args.versions:
        summary(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                [
                    {
                        "wall": r["wall"],
                        "phases": r["phases"],
                        "procs": [
                            {"name": p.name, "first": p.first, "last": p.last, "cpu": p.cpu,
                             "active": p.active()}
                            for p in r["procs"]
                        ],
                    }
                    for r in results
                ],
                fh,
                indent=1,
            )  # fmt: skip


def _runs(args, w: str, state: str, tree: str) -> list[dict]:
    out = []
    versions = [v.split("=", 1) for v in args.versions] or [("", args.src)]
    for _name, src in versions:  # as pairs.py: an uncompiled copy (PYTHONDONTWRITEBYTECODE)
        subprocess.run([PY, "-m", "compileall", "-q", src], check=True, capture_output=True)
    for i in range(args.runs):
        for name, src in versions:
            with contextlib.ExitStack() as stack:
                devs = [
                    stack.enter_context(tmpfs(f"{w}/dev{k}", args.size))
                    for k in range(args.devices)
                ]
                catalog = os.path.join(state, f"c{i}{name}.sqlite")
                result = run_once(tree, devs, catalog, args.extra, src)
                result["version"] = name
                out.append(result)
    return out


_PHASES = (
    ("started", "movers started"),
    ("scanned", "scanned "),
    ("open", "device(s) open"),
    ("planned", "planned and labelled"),
    ("begun", "set begun"),
    ("committed", "every device committed"),
    ("copied", "catalog copied"),
)


def phases_of(result: dict) -> dict[str, float]:
    """Exec-relative times of the controller's phases, the movers' first sight, the
    controller's CPU at the start and end of the scan, and the wall time."""
    out: dict[str, float] = {"wall": result["wall"]}
    for t, _where, text in result["phases"]:
        for key, start in _PHASES:
            if key not in out and start in text:
                out[key] = t
                cpu = re.search(r"\(CPU ([0-9.]+) s\)", text)
                if cpu:
                    out[f"cpu_{key}"] = float(cpu.group(1))
    movers = [p for p in result["procs"] if p.name == "mover"]
    if movers:
        out["movers"] = min(p.first for p in movers)
    helpers = [p for p in result["procs"] if p.name == "scan helper"]
    out["helper_cpu"] = sum(p.cpu for p in helpers)
    return out


def summary(results: list[dict]) -> None:
    """Medians of each version's phases (seconds, exec-relative unless said)."""
    import statistics

    names = list(dict.fromkeys(r["version"] for r in results))
    cols = [
        ("wall", lambda p: p["wall"]),
        ("movers seen", lambda p: p["movers"]),
        ("scan starts", lambda p: p["started"]),
        ("scan wall", lambda p: p["scanned"] - p["started"]),
        ("scan CPU (controller)", lambda p: p["cpu_scanned"] - p["cpu_started"]),
        ("scan helper CPU", lambda p: p["helper_cpu"]),
        ("waiting for the devices", lambda p: p["open"] - p["scanned"]),
        ("plan, label, begin", lambda p: p["begun"] - p["open"]),
        ("dispatch", lambda p: p["committed"] - p["begun"]),
        ("end (set, catalog copy)", lambda p: p["copied"] - p["committed"]),
        ("to exit", lambda p: p["wall"] - p["copied"]),
        ("serial part (wall - dispatch)", lambda p: p["wall"] - (p["committed"] - p["begun"])),
    ]
    print("\n| phase (median s) | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for label, get in cols:
        row = []
        for n in names:
            vals = []
            for r in results:
                if r["version"] != n:
                    continue
                with contextlib.suppress(KeyError):
                    vals.append(get(phases_of(r)))
            row.append(f"{statistics.median(vals):.3f}" if vals else "-")
        print(f"| {label} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())

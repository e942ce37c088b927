"""Shared benchmark helpers: tmpfs devices, source trees, measured child processes, tables.

Every benchmark runs each tool as a child process and takes its wall time, CPU seconds
(user + system) and peak RSS, so all tools are measured the same way. CPU seconds come
from a cpuacct cgroup the child joins before it starts (the whole process tree: workers
forked by parbackup's fork server are not the tool's children, so ``wait4``'s rusage
misses them); only where no cgroup can be made, from the rusage. Devices are tmpfs
mounts (one per device), so no tool pays for the root disk and the figures show the
tools' own cost. Needs root (mount); the Debian packages of the peer tools are installed
on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PY = sys.executable
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
"""cgroup v1 CPU accounting; cgroup v2 (``cpu.stat``) is used where this is missing."""


@dataclass
class Measured:
    """One measured run of a child process."""

    name: str
    wall: float
    cpu: float
    rss_mb: float
    code: int
    out: str = ""
    pss_mb: float = 0.0
    """Peak of the process tree's summed PSS (shared pages counted once)."""

    @property
    def memory(self) -> str:
        """'peak RSS summed over the processes / peak summed PSS', in MB."""
        return f"{self.rss_mb:.0f} / {self.pss_mb:.0f}"

    def rate(self, nbytes: int) -> float:
        """MB/s (10^6 bytes per second)."""
        return nbytes / self.wall / 1e6 if self.wall > 0 else 0.0


def run(
    name: str,
    argv: Sequence[str],
    *,
    env: dict | None = None,
    cwd: str | None = None,
    check: bool = True,
    stdin: int | None = subprocess.DEVNULL,
) -> Measured:
    """Run ``argv`` and measure it (wall clock; CPU seconds and peak RSS of its whole
    process tree)."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, _CpuGroup() as group:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            env=full_env,
            cwd=cwd,
            stdin=stdin,
            preexec_fn=group.join,
        )
        peak = _PeakRss(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        peak.stop()
        cpu = group.seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    m = Measured(
        name,
        wall,
        usage.ru_utime + usage.ru_stime if cpu is None else cpu,
        peak.kb / 1024,
        proc.returncode,
        text,
        peak.pss_kb / 1024,
    )
    if check and m.code not in (0, 3):
        raise SystemExit(
            f"{name} failed ({m.code}): {' '.join(argv)}\n{text[-2000:]}\n{errors[-4000:]}"
        )
    return m


class _CpuGroup:
    """A fresh CPU-accounting cgroup for one measured run: the child joins it before it
    execs (``join``, run in the child), so every process it starts, however, is counted.
    ``seconds()`` is None where no cgroup could be made (not root, no cgroup fs)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.v2 = False

    def __enter__(self) -> _CpuGroup:
        name = f"parbackup-bench-{os.getpid()}-{time.monotonic_ns()}"
        v2root = _cgroup2_root()
        for base, v2 in ((CPUACCT, False), (v2root, True)):
            if base is None or not base.is_dir():
                continue
            with contextlib.suppress(OSError):
                (base / name).mkdir()
                self.path, self.v2 = base / name, v2
                break
        return self

    def join(self) -> None:
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float | None:
        """CPU seconds used in the group (after its processes end: up to 5 s waited)."""
        if self.path is None:
            return None
        deadline = time.monotonic() + 5
        while (self.path / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.02)  # a fork server ends with its parent, a moment later
        if self.v2:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            remove_cgroup(self.path)


def remove_cgroup(path: Path) -> None:
    """Remove a cgroup the bench made, once its last processes are gone (they end a
    moment after the command does)."""
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def _cgroup2_root() -> Path | None:
    """Where a cgroup2 file system is mounted, if one is."""
    with contextlib.suppress(OSError), open("/proc/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


class _PeakRss(threading.Thread):
    """Polls a process tree every 10 ms: ``kb`` is the sum of each process's VmHWM (peak
    RSS since exec; rusage's ru_maxrss would include the benchmark's own memory,
    inherited at fork), ``pss_kb`` the largest sum of the processes' PSS seen at one
    moment (proportional set size: pages shared between processes, such as the Python
    library, counted once in all, not once per process).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.kb, self.pss_kb, self.done = pid, 0, 0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.kb = max(self.kb, _tree_hwm(self.pid))
            self.pss_kb = max(self.pss_kb, _tree_pss(self.pid))

    def stop(self) -> None:
        self.done.set()
        self.join()


def _tree_hwm(pid: int) -> int:
    total = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            for child in fh.read().split():
                total += _tree_hwm(int(child))
    except (OSError, ValueError):
        pass
    return total


def _tree_pss(pid: int) -> int:
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            for child in fh.read().split():
                total += _tree_pss(int(child))
    except (OSError, ValueError):
        pass
    return total


def parbackup_argv(*args: str) -> list[str]:
    """The command line of parbackup from this checkout."""
    return [PY, "-m", "parbackup", *args]


def parbackup_env(catalog: str) -> dict:
    return {"PYTHONPATH": str(SRC), "PARBACKUP_CATALOG": catalog}


_COMPILED: list[bool] = []


def compile_sources() -> None:
    """Byte-compile the checkout's sources once, as installing the package does.

    Run from a checkout with PYTHONDONTWRITEBYTECODE set (as in this workplace), every
    parbackup process, the controller and each mover, compiled every module it imported
    at every run, which no installed copy does: the controller's imports took 0.36 s of
    CPU against 0.21 s, a mover's 0.15 s against 0.11 s (load average 10). Python still
    reads the .pyc files with that variable set (and ignores a stale one).
    """
    if not _COMPILED:
        subprocess.run([PY, "-m", "compileall", "-q", str(SRC)], check=True)
        _COMPILED.append(True)


# Every bench imports this module: compile before anything is timed.
compile_sources()


# -- mounts ---------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: str, size: str) -> Iterator[str]:
    """A fresh tmpfs mounted at ``path`` for the block; unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(path)


def wipe(path: str) -> None:
    """Empty a directory (a device between two tools) without unmounting it."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def drop_caches() -> None:
    """Ask the kernel to drop clean caches (sources on tmpfs stay in RAM anyway)."""
    with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


# -- peers ----------------------------------------------------------------------------
def ensure_debs(commands: dict[str, str]) -> None:
    """Install the Debian packages providing ``commands`` (command -> package) if missing."""
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' '.join(missing)}; run as root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )


def tree_stats(path: str) -> tuple[int, int]:
    """(regular files, bytes) under ``path``."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if os.path.isfile(os.path.join(dirpath, n)) and not os.path.islink(
                os.path.join(dirpath, n)
            ):
                files += 1
                size += st.st_size
    return files, size


def random_file(path: str, size: int, seed: int) -> None:
    """``size`` incompressible bytes (a fast PRNG stream, so creating them is cheap)."""
    rng = __import__("random").Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 8 << 20)
            fh.write(rng.randbytes(n))
            left -= n


def same_tree(a: str, b: str) -> bool:
    """True when both trees hold the same regular files with the same bytes."""
    proc = subprocess.run(["diff", "-rq", "--no-dereference", a, b], capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout.decode()[-2000:], proc.stderr.decode()[-2000:], file=sys.stderr)
    return proc.returncode == 0


def file_digests(root: str) -> dict[str, bytes]:
    """Relative path -> SHA-256 of every regular file under ``root`` (a restore checked
    against its source)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.file_digest(fh, "sha256").digest()
    return out


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def conditions() -> str:
    """What the machine looked like when the figures were taken."""
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, Python "
        f"{sys.version.split()[0]}"
    )


def alternating(checkouts: Sequence[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """(round, checkouts in the order to run them) for ``rounds`` rounds: the order is
    reversed every other round, so that no checkout always runs first (after a quiet
    spell, or into a cold cache)."""
    for i in range(rounds):
        yield i, list(checkouts) if i % 2 == 0 else list(reversed(checkouts))

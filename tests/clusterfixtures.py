"""A real Dask cluster on this machine: a scheduler and worker "hosts" (docs/CLUSTER.md).

``DaskCluster(work, hosts=3, rate=...)`` starts ``dask scheduler`` in this namespace and,
for each host ``i``, a network namespace joined to this one by a (tbf-shaped) veth pair
(``servers.NetnsHost``) running ``dask worker --name host<i>`` inside a mount namespace of
its own where a tmpfs is mounted on ``disks(i)``: those devices are attached to that host
only, as disks on a media server are. The controller (the test) reaches the scheduler on
loopback; the workers reach it, and the controller, over their own link. Everything is
stopped and removed on exit, even when the test failed. Needs root, ip, unshare.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from servers import NetnsHost, claimed_net, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent


def cluster_available() -> bool:
    """Root, namespaces, unshare and Dask: what a ``DaskCluster`` needs."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    tools = all(shutil.which(t) for t in ("unshare", "nsenter", "tc"))
    return tools and NetnsHost.available()


class DaskCluster:
    """A scheduler and ``hosts`` workers, each in its own network namespace."""

    def __init__(
        self,
        work: Path,
        hosts: int = 3,
        rate: str = "",
        tag: str = "",
        first: int = 1,
        nanny: bool = False,
    ) -> None:
        self.work, self.count, self.rate = work, hosts, rate
        self.nanny = nanny
        """Workers under a nanny (``dask worker``'s default), which restarts a dead one."""
        self.indices = list(range(first, first + hosts))
        """Host numbers (two clusters at once take different ones: their addresses)."""
        self.tag = tag or f"{claimed_net()}"
        self.port = free_port()
        self.scheduler: subprocess.Popen | None = None
        self.hosts: dict[int, NetnsHost] = {}
        self.workers: dict[int, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The processes' environment: Dask's scratch files under ``work``, not /tmp."""
        return {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(self.work / "scratch")}

    @property
    def address(self) -> str:
        """The scheduler as the controller (this namespace) reaches it."""
        return f"tcp://127.0.0.1:{self.port}"

    def disks(self, i: int) -> Path:
        """The directory only host ``i`` sees (a tmpfs in its mount namespace)."""
        return self.work / f"host{i}-disks"

    def _log(self, name: str):
        return open(self.work / f"{name}.log", "wb")

    def start(self) -> DaskCluster:
        py = sys.executable
        self.work.mkdir(parents=True, exist_ok=True)
        with self._log("scheduler") as log:
            self.scheduler = subprocess.Popen(
                [py, "-m", "distributed.cli.dask_scheduler", "--host", "0.0.0.0",
                 "--port", str(self.port), "--no-dashboard"],
                stdout=log, stderr=log, start_new_session=True, env=self.env,
            )  # fmt: skip
        wait_port(self.port, proc=self.scheduler)
        for i in self.indices:
            host = self.hosts[i] = NetnsHost(i, rate=self.rate, tag=self.tag)
            host.start()
            self.route(host)
            self.start_worker(i)
        self.wait_workers(self.count)
        return self

    @staticmethod
    def route(host: NetnsHost) -> None:
        """Let the hosts reach each other through this namespace, as machines on one
        network do (a mover reads a source on another host): forwarding on this end of
        each host's link only (not the machine's), a route to the others' addresses."""
        sysctl = f"/proc/sys/net/ipv4/conf/{host.outer}/forwarding"
        Path(sysctl).write_text("1\n")
        others = host.ip.rsplit(".", 2)[0] + ".0.0/16"
        cmd = ["ip", "-n", host.name, "route", "add", others, "via", host.local_ip]
        subprocess.run(cmd, check=True, capture_output=True)

    def start_worker(self, i: int) -> None:
        """(Re)start host ``i``'s worker, with a fresh tmpfs on its disks."""
        host = self.hosts[i]
        disks = self.disks(i)
        disks.mkdir(exist_ok=True)
        worker = (
            f"mount -t tmpfs -o size=256m pbdisks {disks} && "
            f"exec {sys.executable} -m distributed.cli.dask_worker "
            f"tcp://{host.local_ip}:{self.port} --name host{i} --host {host.ip} "
            f"--nthreads 2 {'--nanny' if self.nanny else '--no-nanny'} --no-dashboard"
        )
        with self._log(f"host{i}") as log:
            self.workers[i] = subprocess.Popen(
                ["ip", "netns", "exec", host.name, "unshare", "-m", "--propagation", "private",
                 "sh", "-c", worker],
                stdout=log, stderr=log, start_new_session=True, env=self.env,
            )  # fmt: skip

    def mkdirs(self, i: int, *names: str) -> list[str]:
        """Make directories on host ``i``'s disks (in its mount namespace); their paths."""
        paths = [str(self.disks(i) / name) for name in names]
        cmd = ["nsenter", "-t", str(self.workers[i].pid), "-m", "mkdir", "-p", *paths]
        subprocess.run(cmd, check=True, capture_output=True)
        return paths

    def wait_workers(self, n: int, timeout: float = 120) -> None:
        """Until the scheduler has ``n`` workers (it tells, we ask it)."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pid(self, i: int) -> int:
        """The process of host ``i``'s Dask worker (under a nanny: the nanny's child)."""
        pid = self.workers[i].pid
        if not self.nanny:
            return pid
        for child in _children(pid):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        raise AssertionError(f"host{i}: no worker process under its nanny")

    def kill_worker_process(self, i: int) -> int:
        """Host ``i``'s worker process dies (SIGKILL), its nanny left to restart it; the
        pid that died."""
        pid = self.worker_pid(i)
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_worker(self, i: int) -> None:
        """Host ``i``'s worker dies at once (SIGKILL), as a crashed media server does."""
        proc = self.workers[i]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(30)

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
        for host in self.hosts.values():
            host.stop()

    def __enter__(self) -> DaskCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


@contextlib.contextmanager
def here_only(path: Path, size: str = "256m"):
    """``path`` as a tmpfs (of ``size``) mounted after the workers started: this machine
    (the controller) sees it, the hosts (their mount namespaces are private) do not."""
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "pbhere", str(path)]
    subprocess.run(cmd, check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def need_cluster() -> None:
    if not cluster_available():
        pytest.skip("needs root, ip netns, unshare and parbackup[cluster]")

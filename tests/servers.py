"""Real servers and stream ends for tests: a FIFO reader, OpenSSH sshd, moto's S3 server.

Everything listens on loopback on a free port and lives in a throw-away directory. The
fixtures in tests/conftest.py start these once per session; other tests can also start
their own (e.g. to kill one mid-backup) by calling the classes directly::

    from servers import SshServer, S3Server, FifoCapture
    with SshServer(tmp_path / "ssh") as ssh: url = ssh.url("/srv/dev1")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


_PORT_BLOCK = 100
_PORTS_USED: list[int] = []  # how many of this process's block free_port has handed out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a server to bind.

    It comes from this process's own block of 100 ports, 20000 + 100 * (``claimed_net()``
    - 64): below the kernel's ephemeral range (32768-60999), so no connection made by
    anyone takes it as its own end between this pick and the server's bind, and held by
    the network number's lock, so no other test process (an xdist worker, a second suite)
    picks it too. A port the kernel picked (``bind(("", 0))``) could be both: a moto
    server, seconds in its imports under load, then failed to bind, or a test reached
    another process's server.
    """
    base = 20000 + (claimed_net() - 64) * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        used = _PORTS_USED[0] if _PORTS_USED else 0
        _PORTS_USED[:] = [used + 1]
        port = base + used % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # a server of this process still on it, or a stranger's
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BLOCK - 1}")


def wait_port(
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    proc: subprocess.Popen | None = None,
) -> None:
    """Wait until something accepts connections on ``host:port``; OSError at once when
    ``proc`` (the server) ended first (a port it could not bind, a bad option)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise OSError(f"the server ended ({proc.returncode}) before it listened") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the poll's pace: the server's listen is the event


class FifoCapture:
    """A named pipe plus a thread that copies whatever is written into it to a file.

    ``url`` is the tape URL to back up onto; after the writer closed the pipe, ``wait()``
    returns the captured image's path (``tape://`` + it reads the tape back).
    """

    def __init__(self, directory: Path, name: str = "tape") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fifo = directory / f"{name}.fifo"
        self.image = directory / f"{name}.img"
        os.mkfifo(self.fifo)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"fifo-{name}")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"tape://{self.fifo}"

    def _run(self) -> None:
        try:
            with open(self.fifo, "rb") as src, open(self.image, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except BaseException as exc:
            self.error = exc

    def wait(self, timeout: float = 60.0) -> Path:
        """Wait for the writer to close the pipe; the captured image."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"nothing closed {self.fifo}")
        if self.error:
            raise self.error
        return self.image


def feed_fifo(directory: Path, image: Path, name: str = "feed") -> Path:
    """A named pipe that a thread fills with ``image`` once a reader opens it."""
    fifo = directory / f"{name}.fifo"
    os.mkfifo(fifo)

    def run() -> None:
        with (
            contextlib.suppress(BrokenPipeError),
            open(fifo, "wb") as dst,
            open(image, "rb") as src,
        ):
            shutil.copyfileobj(src, dst, 1 << 16)

    threading.Thread(target=run, daemon=True, name=f"feed-{name}").start()
    return fifo


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server process and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def keygen(path: Path) -> Path:
    """A new passphrase-less ed25519 key pair at ``path`` (and ``path``.pub)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "parbackup-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


class SshServer:
    """A real OpenSSH sshd on loopback with a throw-away host key and user key.

    The user logs in as the current user (root here) with ``identity``; ``known_hosts``
    holds the server's host key. ``url(path)`` gives a ready ``sftp://`` device URL.
    ``kill()``, ``freeze()`` and ``thaw()`` act on sshd and every session it forked, so
    a server can die or hang mid-backup. ``netns`` runs it inside a network namespace.
    """

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", port: int = 0, netns: str = ""
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port, self.netns = host, port or free_port(), netns
        self.user = os.environ.get("USER") or "root"
        self.proc: subprocess.Popen | None = None
        self.host_key = keygen(self.dir / "host_ed25519")
        self.identity = keygen(self.dir / "id_ed25519")
        (self.dir / "authorized_keys").write_text(self.identity.with_suffix(".pub").read_text())
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.host_key_line = f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n"
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(self.host_key_line)
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )

    def start(self) -> SshServer:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        cmd = [SSHD, "-D", "-e", "-f", str(self.config)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (lives as long as sshd)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        try:
            # a namespace host is routed to over its veth
            wait_port(self.port, self.host, proc=self.proc)
        except OSError:
            self.stop()
            log = (self.dir / "sshd.log").read_text()
            raise RuntimeError(f"sshd did not start: {log}") from None
        return self

    def url(self, path: str | Path, query: str = "") -> str:
        base = f"sftp://{self.user}@{self.host}:{self.port}{path}"
        extra = f"&{query}" if query else ""
        return f"{base}?identity={self.identity}&known_hosts={self.known_hosts}{extra}"

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to sshd and every process it forked (sessions, sftp servers)."""
        if self.proc is None:
            return
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """The server dies: sshd and all its sessions get SIGKILL."""
        self.signal_all(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def freeze(self) -> None:
        """The server hangs: every process stops (SIGSTOP) but keeps its connections."""
        self.signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal_all(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()
            for pid in reversed(process_tree(self.proc.pid)[1:]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            stop_process(self.proc)
            self.proc = None
            self.log.close()

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_NET: list[tuple[int, int]] = []  # (this process's network number, its held lock's fd)
_NET_LOCKS = Path("/tmp/parbackup-test-nets")


def claimed_net() -> int:
    """This process's network number N: its namespace hosts live in 10.N.0.0/16.

    N is held by a lock (flock on one file per N, let go only when the process ends, so
    never left stale), so no other test process running at once (an xdist worker, a
    second suite) uses the same addresses; it was the pid modulo 100, which two
    processes shared whenever their pids did. Starts at the pid's number, so processes
    started together spread out.
    """
    if not _NET:
        _NET_LOCKS.mkdir(exist_ok=True)
        for step in range(100):
            net = 64 + (os.getpid() + step) % 100
            fd = os.open(_NET_LOCKS / f"net{net}", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _NET.append((net, fd))
            break
        else:
            raise RuntimeError("every test network 10.64-163.x.x is taken by a running test")
    return _NET[0][0]


class NetnsHost:
    """A distant host: a network namespace joined to this one by a veth pair.

    ``rate`` (e.g. ``50mbit``) shapes both ends of the link with ``tc qdisc ... tbf rate R
    burst 64kb latency 500ms`` (this kernel has tbf, not netem). ``ip`` is the host's
    address as seen from here; ``cut()`` and ``mend()`` take the link down and up again.
    Needs root; ``available()`` says whether namespaces can be made here.
    """

    def __init__(self, index: int, *, rate: str = "", tag: str = "") -> None:
        net = claimed_net()
        tag = tag or f"{net}"
        self.name = f"pb{tag}h{index}"
        self.outer, self.inner = f"pb{tag}h{index}a", f"pb{tag}h{index}b"
        self.local_ip, self.ip = f"10.{net}.{index}.1", f"10.{net}.{index}.2"
        self.rate = rate
        self.up = False

    @staticmethod
    def available() -> bool:
        if os.geteuid() != 0 or not shutil.which("ip"):
            return False
        probe = f"pbprobe{os.getpid() % 10000}"
        ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ok

    def _ip(self, *args: str, netns: bool = False) -> None:
        cmd = ["ip", "-n", self.name, *args] if netns else ["ip", *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self) -> NetnsHost:
        self._ip("netns", "add", self.name)
        self.up = True
        self._ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        self._ip("link", "set", self.inner, "netns", self.name)
        self._ip("addr", "add", f"{self.local_ip}/24", "dev", self.outer)
        self._ip("link", "set", self.outer, "up")
        self._ip("addr", "add", f"{self.ip}/24", "dev", self.inner, netns=True)
        self._ip("link", "set", self.inner, "up", netns=True)
        self._ip("link", "set", "lo", "up", netns=True)
        if self.rate:
            tbf = ["root", "tbf", "rate", self.rate, "burst", "64kb", "latency", "500ms"]
            subprocess.run(["tc", "qdisc", "add", "dev", self.outer, *tbf], check=True)
            subprocess.run(
                ["ip", "netns", "exec", self.name, "tc", "qdisc", "add", "dev", self.inner, *tbf],
                check=True,
            )
        return self

    def cut(self) -> None:
        """The link goes down (packets are dropped; connections hang, then time out)."""
        self._ip("link", "set", self.outer, "down")

    def mend(self) -> None:
        self._ip("link", "set", self.outer, "up")

    def stop(self) -> None:
        if self.up:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
            self.up = False

    def __enter__(self) -> NetnsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class S3Server:
    """moto's S3-compatible server on loopback, in its own process.

    Its own process keeps the objects it stores out of the test process's memory, and
    lets a test kill it (``kill()``) or hang it (``freeze()``) like any remote server.
    ``env`` holds the AWS settings a client needs (fake credentials, region);
    ``url(bucket, prefix)`` gives an ``s3://`` device URL with its ``?endpoint=``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, netns: str = "") -> None:
        self.host, self.port, self.netns = host, port or free_port(), netns
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> S3Server:
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        try:
            wait_port(self.port, self.host, timeout=60, proc=self.proc)
        except OSError:
            self.stop()
            raise RuntimeError("moto's S3 server did not start") from None
        return self

    def kill(self) -> None:
        """The server dies at once."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)

    def freeze(self) -> None:
        """The server hangs: its process stops (SIGSTOP), its connections stay open."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
            region_name="us-east-1",
        )

    def bucket(self, name: str) -> str:
        """Create a bucket (if missing); its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "", query: str = "") -> str:
        extra = f"&{query}" if query else ""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}{extra}"

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Real servers and stream ends for tests: a FIFO reader, OpenSSH sshd, moto's S3 server.

Everything listens on loopback on a free port and lives in a throw-away directory. The
fixtures in tests/conftest.py start these once per session; other tests can also start
their own (e.g. to kill one mid-backup) by calling the classes directly::

    from servers import SshServer, S3Server, FifoCapture
    with SshServer(tmp_path / "ssh") as ssh: url = ssh.url("/srv/dev1")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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

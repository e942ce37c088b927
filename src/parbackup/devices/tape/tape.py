"""A strictly sequential device: a tape drive, a named pipe (FIFO) or a plain file.

``tape:///dev/nst0``, ``tape:///srv/pipe`` or ``tape:///backups/tape.img``. The medium is
written front to back and never seeked, so anything that takes a byte stream works. A
backup starts a new tape (it does not append): a tape header, then the device label, then
the volumes, then the catalog copy, then an end mark. Restore reads it front to back in
one pass; a plain-file image may also be rewound, a pipe or drive cannot.

Free space cannot be asked of a tape, so ``?capacity=SIZE`` says how much it holds (no
capacity: unbounded, e.g. a pipe). ``?block=SIZE`` (default 256K) is the block size every
write uses, as tape drives want; ``?wait=SECONDS`` (default 60) is how long to wait for
the other end of a FIFO.

One writer per tape: the opened medium is ``flock``ed, never waiting, for as long as it
is open, exclusively by a writer and shared by a reader (restore, verify), so a second
backup onto a tape another run writes or reads is refused before it writes a byte (an
image is truncated only once locked), and a reader is refused while a backup writes. A
FIFO's reader takes no lock: the pipe's other end is its writer by design. A medium that
cannot be locked at all (``flock`` unsupported) is used unlocked.

Stream layout (devices/tape/stream.py, docs/FORMAT.md): a sequence of frames ``kind (1
byte) | body length (u32) | crc32 (u32) | body``, padded with ``P`` frames to whole blocks
wherever the stream is flushed::

    T  tape header: JSON {"format": "parbackup-tape", "version": 1}
    O  start of an object: its name (UTF-8)          D  object data
    C  object committed: its size (u64)              A  object aborted: ignore it
    P  padding (zeros, crc 0)                        E  end of tape
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import select
import stat
import time
from datetime import UTC, datetime
from uuid import uuid4

from parbackup.devices.base import LABEL_NAME, Device, ObjectInfo, ObjectWriter, parse_label
from parbackup.devices.tape.stream import (
    DATA_FRAME,
    DEFAULT_BLOCK,
    SIZE,
    TAPE_HEADER,
    BlockReader,
    BlockWriter,
)
from parbackup.devices.url import DeviceURL, parse_size
from parbackup.errors import (
    DeviceError,
    DeviceMissingError,
    UsageError,
    device_error_from_os,
)
from parbackup.model import Capabilities, Label, Space


class _TapeWriter(ObjectWriter):
    """One object on the tape: D frames, then C (commit) or A (abort)."""

    def __init__(self, device: TapeDevice, name: str) -> None:
        self.device, self.name, self.size, self.open = device, name, 0, True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        out = self.device._out_stream()
        view = memoryview(data)
        for at in range(0, len(view), DATA_FRAME):
            part = view[at : at + DATA_FRAME]
            out.frame(b"D", part)
            self.size += len(part)

    def checkpoint(self) -> bool:
        """Nothing of an unfinished object counts as written: an abort disowns it all."""
        return False

    def commit(self) -> None:
        out = self.device._out_stream()
        out.frame(b"C", SIZE.pack(self.size))
        out.flush()
        self.open = False
        self.device._committed(self.name, self.size)

    def abort(self) -> None:
        if not self.open:
            return
        self.open = False
        out = self.device._output
        if out is not None and not out.broken:
            with contextlib.suppress(DeviceError):
                out.frame(b"A")
        self.device._writing = None


class _ObjectStream(io.RawIOBase):
    """The data of the object the tape is positioned in, until its C frame."""

    def __init__(self, device: TapeDevice) -> None:
        self.device, self.pending = device, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.pending:
            data = self.device._next_data()
            if data is None:
                return 0
            self.pending = memoryview(data)
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class TapeDevice(Device):
    """``tape:///PATH``: a drive, FIFO or file written front to back (see module doc)."""

    scheme = "tape"
    capabilities = Capabilities(
        sequential=True, random_read=False, max_connections=1, durable_commit=True
    )
    options = frozenset({"block", "wait"})

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(url)
        self.path = url.path
        self.block = parse_size(url.params.get("block", str(DEFAULT_BLOCK)))
        self.wait = float(url.params.get("wait", "60"))
        self.mode = "idle"  # then "write" or "read"
        self.fd = -1
        self._output: BlockWriter | None = None
        self._input: BlockReader | None = None
        self._writing: _TapeWriter | None = None
        self._objects: dict[str, int] = {}  # committed objects seen or written
        self._label: Label | None = None
        self._current: str | None = None  # read mode: the object the tape is inside
        self._ended = False
        self.read_only = False

    @classmethod
    def check_url(cls, url: DeviceURL) -> None:
        if not url.path:
            raise UsageError(f"{url.display}: no path (use tape:///dev/nst0)")
        block = parse_size(url.params.get("block", str(DEFAULT_BLOCK)))
        if block < 4096 or block > (16 << 20):
            raise UsageError(f"{url.display}: block size must be 4K..16M")

    # -- opening the medium ----------------------------------------------------------------
    def open(self, write: bool = True) -> None:
        """Check the path; the medium itself is opened at the first write or read.

        With ``write=False`` the tape is only ever read (the first write is refused), and
        a tape that does not exist is missing rather than about to be created.
        """
        self.read_only = not write
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not write:
                raise DeviceMissingError(f"{self.url.display}: no such tape") from None
            if not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
                raise DeviceMissingError(f"{self.url.display}: no such directory") from None
            return
        except OSError as exc:
            raise device_error_from_os(exc, f"{self.url.display}: stat") from exc
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(
                f"{self.url.display}: a directory, not a tape (name a drive, FIFO or file;"
                " a directory device is a plain path)"
            )
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise UsageError(f"{self.url.display}: not a tape drive, FIFO or plain file")

    def _is_fifo(self) -> bool:
        try:
            return stat.S_ISFIFO(os.stat(self.path).st_mode)
        except OSError:
            return False

    def _open_fd(self, flags: int) -> int:
        """Open the medium and lock it (``_lock``); for a FIFO, wait up to ``wait``
        seconds for the other end."""
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if not self._is_fifo():
            try:
                fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise device_error_from_os(exc, f"{self.url.display}: open") from exc
            return self._lock(fd, writing)
        fd = self._open_fifo(flags, writing)
        return self._lock(fd, writing) if writing else fd

    def _open_fifo(self, flags: int, writing: bool) -> int:
        """Open the FIFO once its other end is there (up to ``wait`` seconds)."""
        where = self.url.display
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fd = os.open(self.path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as exc:
                if not (writing and exc.errno == errno.ENXIO):
                    raise device_error_from_os(exc, f"{where}: open FIFO") from exc
                if time.monotonic() > deadline:
                    raise DeviceMissingError(f"{where}: nothing is reading the FIFO") from exc
                time.sleep(0.05)
        if not writing:
            ready, _, _ = select.select([fd], [], [], self.wait)
            if not ready:
                os.close(fd)
                raise DeviceMissingError(f"{where}: nothing is writing into the FIFO")
        os.set_blocking(fd, True)
        return fd

    def _lock(self, fd: int, writing: bool) -> int:
        """``fd`` once ``flock``ed (exclusive to write, shared to read), never waiting;
        closed and DeviceError when another run holds the tape the other way."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if writing else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            doing = "reading" if writing and self._only_read() else "writing"
            raise DeviceError(f"{self.url.display}: another run is {doing} this tape") from None
        except OSError:
            pass  # a medium that cannot be locked at all is used as before
        return fd

    def _only_read(self) -> bool:
        """Whether the runs holding this tape image only read it (their locks are shared):
        asked of a plain file only, as opening a drive again may rewind it."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _start_writing(self) -> None:
        if self.mode == "write":
            return
        if self.read_only:
            raise DeviceError(f"{self.url.display}: opened for reading only; cannot write")
        if self.mode == "read":
            raise DeviceError(f"{self.url.display}: the tape is open for reading")
        image = not os.path.exists(self.path) or stat.S_ISREG(os.stat(self.path).st_mode)
        # An image is truncated only once locked: a refused run changes nothing of it.
        fd = self._open_fd(os.O_RDWR | os.O_CREAT if image else os.O_WRONLY)
        if image:
            try:
                self.overwrote = self._old_label(fd)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
            except OSError as exc:
                os.close(fd)
                raise device_error_from_os(exc, f"{self.url.display}: truncate") from exc
        self.fd = fd
        self.mode = "write"
        self._output = BlockWriter(self.fd, self.block, self.capacity, self.url.display)
        self._output.frame(b"T", TAPE_HEADER)

    def _old_label(self, fd: int) -> str:
        """The label of the tape image about to be written over ('' if none, or not a
        parbackup tape), read through the locked ``fd``: what it held is gone, and the
        catalog must learn it."""
        if os.fstat(fd).st_size == 0:
            return ""
        try:
            self._start_reading(os.dup(fd))  # one open file: a second would meet our lock
            label = self.read_label()
        except DeviceError:
            label = None
        finally:  # back to a fresh start: nothing of the old tape is this run's
            self.close()
            self._label, self._objects = None, {}
        return label.label if label else ""

    def _start_reading(self, fd: int = -1) -> bool:
        """Enter read mode at the front of the tape (opened, or ``fd`` when given); False
        if there is no tape data."""
        if self.mode == "read":
            return True
        if self.mode == "write":
            raise DeviceError(f"{self.url.display}: the tape is open for writing")
        if fd < 0:
            if not os.path.exists(self.path):
                return False
            fd = self._open_fd(os.O_RDONLY)
        self.fd = fd
        self.mode = "read"
        seekable = stat.S_ISREG(os.fstat(self.fd).st_mode)
        self._input = BlockReader(self.fd, self.block, seekable, self.url.display)
        if self._input.at_end():
            return False
        self._read_tape_header()
        return True

    def _read_tape_header(self) -> None:
        assert self._input is not None
        try:
            kind, body = self._input.frame()
            ok = kind == b"T" and json.loads(body).get("format") == "parbackup-tape"
        except (DeviceError, ValueError, AttributeError) as exc:
            raise DeviceError(f"{self.url.display}: not a parbackup tape") from exc
        if not ok:
            raise DeviceError(f"{self.url.display}: not a parbackup tape")
        self._current, self._ended = None, False

    def close(self) -> None:
        out = self._output
        if out is not None and not out.broken:
            with contextlib.suppress(DeviceError):
                if self._writing is not None:
                    self._writing.abort()
                out.frame(b"E")
                out.flush()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd, self._output, self._input, self.mode = -1, None, None, "idle"

    # -- space and labels ------------------------------------------------------------------
    def raw_space(self) -> Space:
        return Space(free=None, capacity=None)

    def space(self) -> Space:
        """The configured capacity minus what this run wrote (a backup starts a new tape)."""
        if self.capacity is None:
            return Space(free=None, capacity=None)
        out = self._output
        used = out.used + out.reserve() if out else 2 * self.block + 64
        return Space(free=max(0, self.capacity - used), capacity=self.capacity)

    def ensure_label(self) -> Label:
        """Start a new tape: header and a fresh label first (a backup never appends)."""
        self._start_writing()
        if self._label is None:
            self._label = Label(
                label=uuid4().hex,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                kind=self.scheme,
            )
            self.write_label(self._label)
        return self._label

    def read_label(self) -> Label | None:
        """The label at the front of the tape (read mode), or the one this run wrote."""
        if self.mode == "write" or self._label is not None:
            return self._label
        if not self._start_reading():
            return None
        name = self._next_object()
        if name != LABEL_NAME:
            raise DeviceError(f"{self.url.display}: the tape does not start with a label")
        where = f"{self.url.display}: unreadable tape label"
        self._label = parse_label(self._rest_of_object(), where)
        return self._label

    # -- writing ---------------------------------------------------------------------------
    def _out_stream(self) -> BlockWriter:
        if self._output is None:
            raise DeviceError(f"{self.url.display}: the tape is not open for writing")
        return self._output

    def _committed(self, name: str, size: int) -> None:
        self._objects[name] = size
        self._writing = None

    def create(self, name: str) -> ObjectWriter:
        self._start_writing()
        if self._writing is not None:
            raise DeviceError(f"{self.url.display}: a tape writes one object at a time")
        if name in self._objects:
            raise DeviceError(f"{self.url.display}: {name} is already on this tape")
        self._out_stream().frame(b"O", name.encode())
        self._writing = _TapeWriter(self, name)
        return self._writing

    def delete(self, name: str) -> None:
        if name in self._objects:
            raise DeviceError(f"{self.url.display}: a tape cannot delete {name}")

    # -- reading ---------------------------------------------------------------------------
    def _next_object(self) -> str | None:
        """Skip to the start of the next object on the tape; None at the end mark."""
        assert self._input is not None
        if self._ended:
            return None
        while True:
            kind, body = self._input.frame()
            if kind == b"O":
                self._current = body.decode()
                return self._current
            if kind == b"E":
                self._current, self._ended = None, True
                return None
            if kind == b"C" and self._current is not None:
                self._objects[self._current] = SIZE.unpack(body)[0]
            if kind in (b"C", b"A"):
                self._current = None

    def _next_data(self) -> bytes | None:
        """The next data frame of the current object; None once it is committed."""
        assert self._input is not None
        if self._current is None:
            return None
        kind, body = self._input.frame()
        if kind == b"D":
            return body
        name, self._current = self._current, None
        if kind == b"C":
            self._objects[name] = SIZE.unpack(body)[0]
            return None
        if kind == b"A":
            raise DeviceError(f"{self.url.display}: {name} was abandoned while written")
        raise DeviceError(f"{self.url.display}: {name} is cut short on the tape")

    def _rest_of_object(self) -> bytes:
        out = bytearray()
        while (data := self._next_data()) is not None:
            out += data
        return bytes(out)

    def _seek_object(self, name: str) -> None:
        """Position the tape at the start of ``name``: forward, or rewind a plain file."""
        if not self._start_reading():
            raise DeviceMissingError(f"{self.url.display}: the tape is empty")
        assert self._input is not None
        rewound = False
        while True:
            found = self._next_object()
            if found == name:
                return
            if found is None:
                if rewound or not self._input.seekable:
                    where = "on the tape" if rewound else "ahead on the tape (read front to back)"
                    raise DeviceMissingError(f"{self.url.display}: no object {name} {where}")
                self._input.rewind()
                self._read_tape_header()
                rewound = True

    def open_read(self, name: str, chunk: int = 8 << 20):  # type: ignore[override]
        """A stream over ``name``, read from where the tape is (one pass, no seeks)."""
        self._seek_object(name)
        return io.BufferedReader(_ObjectStream(self), min(chunk, 1 << 20))

    def read(self, name: str, offset: int, length: int) -> bytes:
        with self.open_read(name) as stream:
            skip = offset
            while skip > 0:
                got = stream.read(min(skip, 1 << 20))
                if not got:
                    return b""
                skip -= len(got)
            return stream.read(length)

    def get(self, name: str) -> bytes:
        self._seek_object(name)
        return self._rest_of_object()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects written in this run; when reading, every object on the tape (a full pass)."""
        if self.mode != "write" and self._start_reading():
            while self._next_object() is not None:
                pass
        return [ObjectInfo(n, s) for n, s in sorted(self._objects.items()) if n.startswith(prefix)]

    def size(self, name: str) -> int:
        if name not in self._objects:
            self.list(name)
        if name not in self._objects:
            raise DeviceMissingError(f"{self.url.display}: no object {name}")
        return self._objects[name]

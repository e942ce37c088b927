"""The parent side of readback: start one reader process per device, gather its results.

``read_back`` finds each wanted device by its label (``--device`` URLs first, then where
the catalog last saw it), gives each reader its records and a sink spec, and turns the
readers' batched messages into per-file results and progress events. A device that
cannot be reached, a reader that dies, and a reader silent for ``stall`` seconds (it is
killed) all turn the files it held into damage naming the device; the caller never
hangs. Whatever happens, every reader is dead when ``read_back`` returns or raises.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from parbackup.crypto.codec import CodecSpec
from parbackup.forkserver import ForkServerExecutor
from parbackup.model import RecordRef
from parbackup.progress import DeviceBytes, EventSink
from parbackup.readback.messages import (
    Chunk,
    Credit,
    Finished,
    Opened,
    OpenFailed,
    PackedRef,
    Progress,
    ReaderSpec,
    VolumeDamage,
    Work,
    pack,
)
from parbackup.readback.sinks import SinkSpec, StreamSinkSpec
from parbackup.workers import Crashed, Executor, Worker, wait_any

READER = "parbackup.readback.reader:read_worker"
OPEN_SECONDS = 60.0
"""How long a reader may take to open its device and read its label."""
STALL_SECONDS = 120.0
"""A reader that sends nothing for this long (a hung device) is killed; a reader that
announced a large read gets one more second for every ``SLOWEST`` bytes of it."""
SLOWEST = 32 << 10

Records = dict[str, list[tuple[int, RecordRef]]]
Packed = dict[str, list[PackedRef]]
"""Records per device label as the readers take them (``pack``), straight from the
catalog's rows (readback/select.py ``packed_by_label``)."""
OnChunk = Callable[[str, int, bytes], list[str]]
"""on_chunk(label, offset, data) -> labels of the chunks written now (stream sink)."""


@dataclass
class Outcome:
    """What the readers found, per file id."""

    damaged: dict[int, tuple[str, str]] = field(default_factory=dict)
    """The first (device, error) reported for each damaged file."""
    good: Counter[int] = field(default_factory=Counter)
    """How many devices reported all of a file's records there good."""
    volumes: list[dict] = field(default_factory=list)
    """Verify: damage in a volume that hits no file's bytes (``cut``: its tail cut;
    ``file``: the entry whose payload-less or metadata record went with it)."""
    unowned: set[int] = field(default_factory=set)
    """Files restored whose owner root could not give (restore names them)."""

    def ok(self, fid: int, devices: int) -> bool:
        """True when the file is undamaged and all ``devices`` holding it said so."""
        return fid not in self.damaged and self.good[fid] >= devices


@dataclass
class _Reader:
    label: str
    url: str
    worker: Worker
    pending: set[int] = field(default_factory=set)
    window: int = 0
    outstanding: int = 0
    last: float = field(default_factory=time.monotonic)
    grace: float = 0.0


def _end(worker: Worker) -> None:
    """Make sure a worker is gone (killed if it has not ended) and its channel and send
    thread released (a long-lived process verifying again and again kept them all)."""
    if not worker.join(0) and not worker.join(0.5):
        worker.kill()
        worker.join(5.0)
    else:
        worker.kill()  # ended: only releases its channel


def _await_open(workers: list[Worker], timeout: float) -> dict[int, Opened | str]:
    """Each worker's answer to opening its device (by index): Opened, or why not."""
    answers: dict[int, Opened | str] = {}
    waiting = {id(w.channel): i for i, w in enumerate(workers)}
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        chans = [workers[i].channel for i in waiting.values()]
        ready = wait_any(chans, min(max(left, 0), 1.0))  # past it, still read what came
        if not ready and left <= 0:
            break
        for ch in ready:
            i = waiting.pop(id(ch))
            try:
                msg = ch.recv()
            except (EOFError, OSError):
                msg = OpenFailed(workers[i].why_ended("reader"))
            if isinstance(msg, Opened):
                answers[i] = msg
            elif isinstance(msg, OpenFailed | Crashed):
                answers[i] = msg.error
            else:
                answers[i] = f"unexpected message from a reader: {type(msg).__name__}"
    for i in waiting.values():
        answers[i] = f"no answer within {timeout:g} seconds"
    return answers


class _Run:
    """One readback: the readers and what they reported."""

    def __init__(self, executor: Executor, on_event: EventSink, slowest: float) -> None:
        self.executor, self.on_event, self.slowest = executor, on_event, slowest
        self.workers: list[Worker] = []
        self.readers: dict[str, _Reader] = {}
        self.out = Outcome()

    def start(self, url: str, labels: set[str]) -> Worker | str:
        """A reader for the device at ``url``, or why it could not be started."""
        try:
            worker = self.executor.start(READER, ReaderSpec(url, frozenset(labels)), "reader")
        except OSError as exc:
            return f"cannot start a reader process: {exc}"
        self.workers.append(worker)
        return worker

    def open(self, needed: set[str], known: dict[str, str], overrides: Sequence[str]) -> dict:
        """Start a reader for every needed label; the reasons for those not reached."""
        missing: dict[str, str] = {}
        if overrides:
            tried = [self.start(url, needed) for url in overrides]
            started = [w for w in tried if not isinstance(w, str)]
            # in the order given, not the order they answered: the first URL that holds a
            # label reads it (the stand-ins, given first, win over a -d device holding a
            # half-repaired copy of the same label, however fast that one opens)
            for i, answer in sorted(_await_open(started, OPEN_SECONDS).items()):
                if isinstance(answer, Opened) and answer.label not in self.readers:
                    self.readers[answer.label] = _Reader(answer.label, answer.url, started[i])
                else:
                    started[i].send(None)
                    _end(started[i])
        rest = sorted(needed - set(self.readers))
        for label in [lb for lb in rest if lb not in known]:
            missing[label] = "not known to the catalog"
        rest = [lb for lb in rest if lb in known]
        # Each known URL may answer for any needed label, as a -d does: devices that
        # swapped places (two disks mounted the other way round) are still recognised by
        # their labels (D4). Before, each was "now holds another device" and the set was
        # called damaged until both were named with -d.
        attempts = [(label, self.start(known[label], needed)) for label in rest]
        for label, w in attempts:
            if isinstance(w, str):
                missing[label] = w
        rest = [label for label, w in attempts if not isinstance(w, str)]
        started = [w for _label, w in attempts if not isinstance(w, str)]
        why: dict[str, str] = {}
        for i, answer in sorted(_await_open(started, OPEN_SECONDS).items()):
            if isinstance(answer, Opened) and answer.label not in self.readers:
                self.readers[answer.label] = _Reader(answer.label, answer.url, started[i])
                if answer.label != rest[i]:
                    why[rest[i]] = f"{answer.url} now holds another device (label {answer.label})"
            else:
                if isinstance(answer, Opened):
                    why[rest[i]] = f"{answer.url} now holds another device (label {answer.label})"
                    started[i].send(None)
                else:
                    why[rest[i]] = answer
                _end(started[i])
        for label in rest:
            if label not in self.readers:
                missing[label] = why.get(label, "not reached")
        return missing

    def lost(self, reader: _Reader, reason: str) -> None:
        """A reader is gone before it finished: what it still held is damaged."""
        for fid in reader.pending:
            self.out.damaged.setdefault(fid, (reader.url, reason))
        reader.pending.clear()
        reader.worker.kill()
        reader.worker.join(5.0)

    def handle(self, reader: _Reader, msg: Any, on_good: Callable, on_chunk: OnChunk) -> bool:
        """Take one message; False once the reader is finished (or crashed)."""
        out = self.out
        if isinstance(msg, Progress):
            reader.grace = msg.reading / self.slowest
            for fid in msg.good:
                reader.pending.discard(fid)
                out.good[fid] += 1
            for fid, error in msg.damaged:
                reader.pending.discard(fid)
                out.damaged.setdefault(fid, (reader.url, error))
            out.unowned.update(msg.unowned)
            if msg.good:
                on_good(msg.good)
            if msg.nbytes:
                self.on_event(DeviceBytes(reader.url, msg.nbytes))
        elif isinstance(msg, Chunk):
            reader.outstanding += 1
            for label, n in Counter(on_chunk(reader.label, msg.offset, msg.data)).items():
                self.readers[label].outstanding -= n
                self.readers[label].worker.send(Credit(n))
        elif isinstance(msg, VolumeDamage):
            out.volumes.append(
                {"path": "", "volume": msg.volume, "device": reader.url, "error": msg.error}
                | {"file": msg.file, "cut": msg.cut}
            )
        elif isinstance(msg, Finished):
            reader.pending.clear()
            _end(reader.worker)
            return False
        elif isinstance(msg, Crashed):
            self.lost(reader, f"reader failed: {msg.error}")
            return False
        return True

    def gather(
        self, on_good: Callable, on_chunk: OnChunk, stall: float, stop_on_damage: bool
    ) -> None:
        """Take messages until every reader has finished or been given up."""
        live = {id(r.worker.channel): r for r in self.readers.values()}
        while live and not (stop_on_damage and self.out.damaged):
            chans = [r.worker.channel for r in live.values()]
            for ch in wait_any(chans, 0.5):
                reader = live[id(ch)]
                reader.last = time.monotonic()
                try:
                    msg = ch.recv()
                except (EOFError, OSError):
                    self.lost(reader, reader.worker.why_ended("reader"))
                    del live[id(ch)]
                    continue
                if not self.handle(reader, msg, on_good, on_chunk):
                    del live[id(ch)]
            now = time.monotonic()
            for key, reader in list(live.items()):
                waiting = reader.window and reader.outstanding >= reader.window
                if now - reader.last <= stall + reader.grace or waiting:
                    continue
                if reader.worker.channel.poll(0):  # it spoke while the others' messages
                    continue  # were handled (chunks written to a slow sink): read it next
                self.lost(reader, f"{reader.url}: no answer within {stall:g} seconds")
                del live[key]


def default_executor() -> ForkServerExecutor:
    """Where readers run unless the caller says: local processes forked from a server
    that has the reader module imported already."""
    return ForkServerExecutor(preload=[READER.partition(":")[0]])


def warm_up() -> None:
    """Get reader processes ready to start while the caller reads the catalog."""
    default_executor().warm()


def read_back(
    set_id: bytes,
    work: Records | Packed,
    known_urls: dict[str, str],
    overrides: Sequence[str],
    sink: Callable[[str], SinkSpec],
    on_event: EventSink,
    *,
    frames: dict[str, tuple[list[tuple[int, RecordRef]], bool]] | None = None,
    on_good: Callable[[list[int]], None] = lambda fids: None,
    on_chunk: OnChunk = lambda label, offset, data: [],
    meanwhile: Callable[[], None] = lambda: None,
    stop_on_damage: bool = False,
    executor: Executor | None = None,
    stall: float = STALL_SECONDS,
    slowest: float = SLOWEST,
    codec: CodecSpec | None = None,
    idents: dict[int, int] | None = None,
    packed: bool = False,
) -> Outcome:
    """Read ``work`` (records per device label) with one reader process per device.

    ``sink(label)`` gives each reader's sink spec; ``frames`` (verify) gives each
    device's records for the volume-frame checks and whether its volumes must end with an
    end record. ``on_good`` hears the files a reader reported good, as they come.
    ``meanwhile()`` runs once every reader has its work, before any answer is taken:
    the caller's work that no reader waits for. A reader silent for ``stall`` seconds,
    plus the time a read it announced takes at ``slowest`` bytes per second, is given
    up. ``codec`` (with the key of an encrypted set) goes to every reader in its work,
    never through the environment. ``idents`` (readback/messages.py ``identity``, by
    file id) go to the readers of those files. ``packed``: ``work`` holds ``PackedRef``
    tuples already (sent as they are), not ``RecordRef``s.
    """
    run = _Run(executor or default_executor(), on_event, slowest)
    needed = set(work) | set(frames or {})
    try:
        missing = run.open(needed, known_urls, overrides)
        for label, reason in missing.items():
            for rec in work.get(label, []):  # the file id is first in either form
                run.out.damaged.setdefault(
                    rec[0], (known_urls.get(label, label), "device unavailable: " + reason)
                )
        relay = getattr(run.executor, "relay_sink", None)  # readers on other hosts
        for label, reader in run.readers.items():
            records = work.get(label, [])
            spec = sink(label)
            spec = relay(spec) if relay is not None else spec
            reader.window = spec.window if isinstance(spec, StreamSinkSpec) else 0
            reader.pending = {rec[0] for rec in records}
            frame_refs, expect_end = (frames or {}).get(label, (None, True))
            frame_work = None if frame_refs is None else pack(frame_refs)
            mine = None if idents is None else {f: idents[f] for f in reader.pending if f in idents}
            sent: list[PackedRef] = records if packed else pack(records)  # type: ignore[assignment,arg-type]
            reader.worker.send(Work(set_id, sent, spec, frame_work, expect_end, codec, mine))
        meanwhile()  # the caller's own work, while the readers read
        for reader in run.readers.values():
            reader.last = time.monotonic()
        run.gather(on_good, on_chunk, stall, stop_on_damage)
    finally:
        for worker in run.workers:
            if worker.alive():
                worker.kill()
        for worker in run.workers:
            worker.join(5.0)
    return run.out

"""The hang checks (R1): a device is failed for its silence only, never for the slowness
of the process that listens to it: the backup's dispatcher, restore's and verify's
reader loop.

The dispatcher reads the movers' channels that were ready when it last waited, handles
their messages (a ``Durable`` is a catalog write, an fsync of the catalog's WAL: seconds
on a loaded disk), then checks for hangs. A message another device sent meanwhile is
its word, not its silence: it is read before that device can be failed. Restore and
verify do the same with their readers (a chunk written to a slow ``--stdout``).
"""

from __future__ import annotations

from multiprocessing import Pipe

from parbackup.engine import fleet
from parbackup.engine import messages as m
from parbackup.engine.dispatch import DeviceState, Dispatcher, RunOptions
from parbackup.entries import Entries
from parbackup.model import Order, Space, Strategy
from parbackup.progress import DeviceFailed
from parbackup.readback import core
from parbackup.readback import messages as rm
from parbackup.readback.core import _Reader, _Run
from parbackup.workers import Outbox, SendsThroughOutbox

LIMIT = 1.0


class _Mover:
    """The dispatcher's end of a mover that is not a process: the test speaks for it
    through ``mouth``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel, self.mouth = Pipe()
        self.killed = False

    def send(self, msg: object) -> None:
        pass

    def delivered(self) -> float:
        return 0.0

    def alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True

    def join(self, timeout: float) -> bool:
        return True

    def why_ended(self, role: str) -> str:
        return f"its {role} process ended unexpectedly"


def _owing(index: int, silent_for: float) -> DeviceState:
    """A device that owes its commit (a Finish sent, no Committed yet), last heard
    ``silent_for`` seconds ago as the dispatcher saw it."""
    dev = DeviceState(index, f"mem://d{index}", _Mover(f"d{index}"), label="")
    dev.finishes = 1
    dev.last_heard -= silent_for
    return dev


def _dispatcher(devices: list[DeviceState], events: list) -> Dispatcher:
    options = RunOptions(Strategy.FILL, Order.DESC, LIMIT, 1 << 20)
    return Dispatcher(devices, None, "00", Entries(), options, events.append, lambda n: 0)  # type: ignore[arg-type]


def test_a_device_whose_message_waits_unread_is_not_failed_as_hung():
    """Device 1's progress came while the dispatcher was busy past the limit with device
    0's messages; it is in its channel, unread, at the check. Device 2 said nothing at
    all: it alone is failed."""
    events: list = []
    heard, silent = _owing(1, 3 * LIMIT), _owing(2, 3 * LIMIT)
    dispatcher = _dispatcher([_owing(0, 0), heard, silent], events)
    heard.worker.mouth.send(m.Progress(0, 0, 0.0))  # type: ignore[attr-defined]
    dispatcher.check_hangs()
    assert heard.alive and heard.report.status == "ok"  # type: ignore[union-attr]
    assert not silent.alive
    assert [(e.device, e.reason) for e in events if isinstance(e, DeviceFailed)] == [
        ("mem://d2", f"no progress for {LIMIT:g} seconds")
    ]


class _Outboxed(SendsThroughOutbox, _Mover):
    """A mover end whose messages go out through a real ``Outbox`` to ``mouth``, as a
    worker's do: the test decides when the mover takes them in."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.outbox = Outbox(self.channel, name)


def test_silence_counts_from_when_the_work_reached_the_mover():
    """Both devices were given work 3 limits ago, as a message too large for the
    channel's buffer (a busy machine, a slow link). Device 0 has just taken it in: it
    owes nothing for the time it was on its way. Device 1 never takes its message in:
    it is failed as hung, as before."""
    events: list = []
    taken, stuck = _owing(0, 3 * LIMIT), _owing(1, 3 * LIMIT)
    for dev in (taken, stuck):
        dev.worker = _Outboxed(dev.worker.name)
        dev.worker.send(b"w" * (8 << 20))
    dispatcher = _dispatcher([taken, stuck], events)
    mouth = taken.worker.mouth  # type: ignore[attr-defined]
    assert len(mouth.recv()) == 8 << 20
    taken.worker.send(b"after")  # sent only once the large one was delivered whole
    assert mouth.recv() == b"after"
    dispatcher.check_hangs()
    assert taken.alive
    assert not stuck.alive
    assert [(e.device, e.reason) for e in events if isinstance(e, DeviceFailed)] == [
        ("mem://d1", f"no progress for {LIMIT:g} seconds")
    ]
    stuck.worker.mouth.close()  # type: ignore[attr-defined]


def test_a_device_whose_last_words_wait_unread_is_failed_for_them():
    """The channel read at the check can hold the device's own ``Failed``: that is the
    reason given, not a hang."""
    events: list = []
    dev = _owing(1, 3 * LIMIT)
    dispatcher = _dispatcher([_owing(0, 0), dev], events)
    dev.worker.mouth.send(m.Failed("disk on fire"))  # type: ignore[attr-defined]
    dispatcher.check_hangs()
    assert not dev.alive
    assert dev.report.error == "disk on fire"  # type: ignore[union-attr]


def test_a_reader_whose_message_waits_unread_is_not_given_up():
    """Reader A's results are handled (``on_good``: a restore putting files in place)
    while reader B's last message comes; B was last heard 3 stall limits ago. B's
    message is read, not B given up and its file called damaged."""
    a, b = _Mover("a"), _Mover("b")
    run = _Run(None, [].append, 1 << 20)  # type: ignore[arg-type]
    run.readers = {
        "a": _Reader("a", "mem://a", a, pending={1}),  # type: ignore[arg-type]
        "b": _Reader("b", "mem://b", b, pending={2}, last=0.0),  # type: ignore[arg-type]
    }
    a.mouth.send(rm.Progress([1], [], 0))
    a.mouth.send(rm.Finished())

    def on_good(files: list[int]) -> None:  # B speaks while A's results are handled
        b.mouth.send(rm.Progress([2], [], 0))
        b.mouth.send(rm.Finished())

    run.gather(on_good, lambda *_: {}, LIMIT, stop_on_damage=False)
    assert run.out.damaged == {}
    assert run.out.good == {1: 1, 2: 1}


class _Paused:
    """A clock that jumps ``by`` seconds after its first reading: the process was
    stopped (or starved of CPU) for that long, while its movers ran."""

    def __init__(self, by: float) -> None:
        self.at, self.by, self.read = 0.0, by, False

    def monotonic(self) -> float:
        at = self.at + (self.by if self.read else 0.0)
        self.read = True
        return at


def test_movers_that_answered_while_the_backup_was_stopped_are_not_buried(monkeypatch):
    """Both movers started and opened their devices while the backup itself was stopped
    past every deadline; their answers wait in their channels and are read, not the
    devices buried as "did not start"."""
    monkeypatch.setattr(fleet, "time", _Paused(10 * fleet.START_SECONDS))
    devices = [DeviceState(i, f"mem://d{i}", _Mover(f"d{i}")) for i in range(2)]
    for i, dev in enumerate(devices):
        dev.worker.mouth.send(m.Started())  # type: ignore[attr-defined]
        dev.worker.mouth.send(m.Opened(f"label{i}", Space(None, None), "mem", False))  # type: ignore[attr-defined]
    crew = fleet.Fleet(devices, LIMIT)
    assert crew.opened() == devices
    assert crew.dead == [] and [d.label for d in devices] == ["label0", "label1"]


def test_an_answer_that_came_while_the_backup_was_stopped_is_read(monkeypatch):
    """The requests around the data path (label, probe, the catalog copy) wait for one
    answer with the device timeout: one that came while the backup was stopped past it
    is the answer, not "no progress"."""
    monkeypatch.setattr(fleet, "time", _Paused(10 * LIMIT))
    dev = DeviceState(0, "mem://d0", _Mover("d0"))
    dev.worker.mouth.send(m.Labelled("label0", ""))  # type: ignore[attr-defined]
    assert fleet._answer(dev, (m.Labelled,), LIMIT) == m.Labelled("label0", "")


def test_readers_that_opened_while_the_restore_was_stopped_are_read(monkeypatch):
    """Restore's readers opened their devices while the restore was stopped past the
    open timeout: their ``Opened`` is read, not "no answer"."""
    monkeypatch.setattr(core, "time", _Paused(10 * core.OPEN_SECONDS))
    readers = [_Mover("a"), _Mover("b")]
    for i, r in enumerate(readers):
        r.mouth.send(rm.Opened(f"label{i}", f"mem://{i}"))
    answers = core._await_open(readers, core.OPEN_SECONDS)  # type: ignore[arg-type]
    assert answers == {0: rm.Opened("label0", "mem://0"), 1: rm.Opened("label1", "mem://1")}

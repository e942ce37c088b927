"""readback/messages.py ``Pickled``: a reader's work pickled once by the controller (one
after the other, not in every channel's send thread at once) reaches the reader as the
message itself, through a real channel and a real reader process."""

from __future__ import annotations

import pickle
from multiprocessing import Pipe

from parbackup.crypto.codec import CodecSpec
from parbackup.readback.messages import Pickled, Work
from parbackup.readback.sinks import DirectorySinkSpec


def _work() -> Work:
    records = [(7, "vol-0001", 64, 48, 0, 5, bytes(range(32)), "", 0, -1)]
    sink = DirectorySinkSpec({7: ("/t/a", 5, 0o644, 0, 0, 123, True)}, "/t", "~1")
    return Work(b"\x01" * 16, records, sink, None, True, CodecSpec(), {7: 99})


def test_pickled_work_arrives_as_the_work_itself():
    ours, theirs = Pipe()
    try:
        ours.send(Pickled(_work()))
        got = theirs.recv()
    finally:
        ours.close()
        theirs.close()
    assert isinstance(got, Work)
    assert got == _work()


def test_pickled_now_not_when_sent():
    work = _work()
    wrapped = Pickled(work)
    work.records.append((8, "vol-0001", 0, 0, 0, 0, b"", "", 0, -1))  # changed after
    assert pickle.loads(pickle.dumps(wrapped)).records == _work().records

"""The dispatcher's work items alone: a million small files' items through ``refill``,
``work_items`` and pickling, without movers (issue 10).

    PYTHONPATH=SRC .venv/bin/python bench/dispatch_items.py TREE DEV1 DEV2

Scans TREE and plans it onto the (labelled or empty) device directories, then times in
this process (``time.process_time``, no garbage collector) ``Dispatcher.assign`` and
every item sent: each batch is pickled as a channel would and at once marked written
and durable. Prints JSON: CPU seconds of both, the messages, their pickled bytes and a
digest of them per device (two versions of the code that send the same messages print
the same digests). Run it with each version's ``src`` as PYTHONPATH, alternating.
"""

import gc
import hashlib
import json
import pickle
import sys
import time

from parbackup.engine import dispatch as dp
from parbackup.engine.devices import close_all, open_devices
from parbackup.engine.prepare import make_plan, scan, source_specs
from parbackup.engine.report import BackupOptions


class Channel:
    """A worker that pickles what it is sent, and keeps only its size and digest."""

    channel = None

    def __init__(self) -> None:
        self.messages = self.nbytes = 0
        self.digest = hashlib.sha1()

    def send(self, msg: object) -> None:
        data = pickle.dumps(msg, protocol=5)
        self.digest.update(data)
        self.nbytes += len(data)
        self.messages += 1


def main() -> None:
    tree, devs = sys.argv[1], sys.argv[2:]
    entries = scan(source_specs([tree]), [])
    alive, _ = open_devices(devs, create_labels=False, require_label=False)
    options = BackupOptions()
    plan = make_plan(entries, [d.space for d in alive], options)
    close_all(alive)
    devices = [
        dp.DeviceState(index=i, url=f"d{i}", worker=Channel(), label=f"L{i}")  # type: ignore[arg-type]
        for i in range(len(devs))
    ]
    run = dp.RunOptions(options.strategy, options.order, 60.0, 64 << 20)
    d = dp.Dispatcher(devices, None, "a" * 32, entries, run, lambda e: None, lambda n: 0)  # type: ignore[arg-type]
    gc.disable()
    t0 = time.process_time()
    d.assign(plan, list(range(len(devs))))
    t1 = time.process_time()
    for dev in devices:
        while dev.queue:
            d.refill(dev)
            dev.sent.retire(dev.sent.next_seq - 1)
    t2 = time.process_time()
    workers = [dev.worker for dev in devices]
    print(
        json.dumps(
            {
                "assign": round(t1 - t0, 3),
                "items": round(t2 - t1, 3),
                "messages": sum(w.messages for w in workers),  # type: ignore[attr-defined]
                "bytes": sum(w.nbytes for w in workers),  # type: ignore[attr-defined]
                "digests": [w.digest.hexdigest()[:12] for w in workers],  # type: ignore[attr-defined]
            }
        )
    )


if __name__ == "__main__":
    main()

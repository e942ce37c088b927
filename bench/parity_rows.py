"""What "movers add into shared parity rows" would cost (issue 12): a prototype of its
hot path beside today's parity path, CPU seconds of each in alternating rounds.

    .venv/bin/python bench/parity_rows.py --work /tmp/NAME/rows --rounds 7   # k=3, m=1, 256 MiB

Today (bench/parity_path.py's child, engine/paritytee.py and paritystream.py): each mover
copies every unit into a shared slot and digests it there; the collector adds the slot
to its row with ISA-L and gives the slot back. The idea of sessions 6-8 (BENCHMARKS.md,
"Parity (issue 12)"): each mover adds its own bytes into a row of a shared mapping with
ISA-L's bytewise ``ec_encode_data_update`` (no copy, no slot to give back), holding a
lock on the row (a POSIX record lock: movers are processes), and digests its unit from
its own buffer; the collector only digests complete rows, writes them, zeroes them for
reuse and tells the movers how far the window moved.

The prototype has none of the real design's harder parts (a column too far ahead held,
then spilled; a mover that breaks mid-row, which spoils every row it added into; the
row records and fragment headers, which the collector writes per row whatever the
design: a few microseconds each): it bounds what the design can save, it is not it.
Movers here are k forked processes feeding ``--size`` MiB in 1 MiB writes, as
bench/parity_path.py's tees do; rows go to a file on a tmpfs of its own.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import mmap
import os
import resource
import shutil
import socket
import time
from multiprocessing.connection import Connection, wait

import parity_path
from common import SRC
from parity_path import arguments, ratio, rounds, run_child

MIB = 1 << 20
HEADER = 96
"""Bytes of a record's header (about a mover's: its first write of each record)."""


def shared_rows(work: str, size: int, k: int, m: int, record: int, window: int = 16) -> dict:
    """One run of the prototype (see the module docstring): CPU seconds of the collector
    (this process) and of the k movers."""
    import xxhash

    from parbackup.redundancy.isal import Updater, address

    unit = MIB
    updater = Updater.load(k, m, unit)
    assert updater is not None, "ISA-L is not available"
    per = max(1, size // k)
    rows = mmap.mmap(-1, window * m * unit, flags=mmap.MAP_SHARED)
    base = address(rows)
    locks = os.memfd_create("parbackup-rows")
    os.ftruncate(locks, window)
    out = os.path.join(work, "p0")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    fd = os.open(os.path.join(out, "parity"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    period = bytearray(os.urandom(HEADER + record))  # one record: its header, its payload
    at = address(period)
    length = per * unit // len(period) * len(period)  # whole records, about per MiB
    rows_n = -(-length // unit)
    # what each row must hold (every column carries the same stream): checked as it leaves
    expect = []
    tables = updater.tables
    for r in range(rows_n):
        got_unit = bytearray(unit)
        start = r * unit
        take = min(unit, length - start)
        first = start % len(period)
        piece = (period[first:] + period * (unit // len(period) + 2))[:take]
        got_unit[:take] = piece
        buf = bytearray(m * unit)
        for j in range(k):
            add = updater.add if j else updater.put
            add(j, address(got_unit), [address(buf) + i * unit for i in range(m)])
        expect.append([xxhash.xxh3_128_digest(buf[i * unit : (i + 1) * unit]) for i in range(m)])
    wrong = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.perf_counter(), time.process_time()
    conns, pids = [], []
    for j in range(k):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # a mover: its column, record by record, added into the rows
            ours.close()
            conn = Connection(theirs.detach())
            limit, pos, hasher = window, 0, xxhash.xxh3_128()
            whole_period = memoryview(period)
            pointers = ctypes.c_void_p * m
            while pos < length:
                for lo, hi in ((0, HEADER), (HEADER, len(period))):  # two writes a record
                    src = lo
                    while src < hi:  # the write, cut where units end
                        r, off = divmod(pos, unit)
                        n = min(hi - src, unit - off)
                        while r >= limit:  # the row is not free yet: wait for the window
                            limit = conn.recv()
                        while conn.poll(0):
                            limit = conn.recv()
                        slot = r % window
                        fcntl.lockf(locks, fcntl.LOCK_EX, 1, slot)
                        updater.lib.ec_encode_data_update(
                            ctypes.c_int(n),
                            ctypes.c_int(k),
                            ctypes.c_int(m),
                            ctypes.c_int(j),
                            tables,
                            ctypes.c_void_p(at + src),
                            pointers(*(base + (slot * m + i) * unit + off for i in range(m))),
                        )
                        fcntl.lockf(locks, fcntl.LOCK_UN, 1, slot)
                        hasher.update(whole_period[src : src + n])
                        src += n
                        pos += n
                        if pos % unit == 0:
                            conn.send(("u", r, hasher.digest()))
                            hasher.reset()
            if pos % unit:
                hasher.update(bytes(unit - pos % unit))
                conn.send(("u", pos // unit, hasher.digest()))
            conn.send(("e",))
            while conn.recv() != 0:  # until the collector sent its last window
                pass
            os._exit(0)
        theirs.close()
        conns.append(Connection(ours.detach()))
        pids.append(pid)
    got = [0] * k
    done, ended = 0, 0
    digests: dict[int, list] = {}
    with memoryview(rows) as whole:
        while ended < k:
            for c in wait(conns):
                msg = c.recv()
                j = conns.index(c)
                if msg[0] == "e":
                    ended += 1
                    continue
                digests.setdefault(msg[1], []).append(msg[2])
                got[j] += 1
            while done < rows_n and min(got) > done:
                slot = done % window
                parity = whole[slot * m * unit : (slot + 1) * m * unit]
                sums = [xxhash.xxh3_128_digest(parity[i * unit : (i + 1) * unit]) for i in range(m)]
                wrong += sums != expect[done]
                os.write(fd, parity)
                ctypes.memset(base + slot * m * unit, 0, m * unit)
                digests.pop(done)
                done += 1
                for c in conns:
                    c.send(done + window)
    for c in conns:
        c.send(0)
    for pid in pids:
        os.waitpid(pid, 0)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.close(fd)
    os.close(locks)
    if wrong:
        raise SystemExit(f"{wrong} of {done} rows hold the wrong parity")
    return {
        "collector": time.process_time() - cpu,
        "tees": children.ru_utime + children.ru_stime - before.ru_utime - before.ru_stime,
        "wall": time.perf_counter() - started,
        "rows": done,
    }


def main() -> None:
    ap = arguments(__doc__, "/tmp/pbparityrows")
    ap.set_defaults(record=4 * MIB)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(shared_rows(args.work, args.size, args.k, args.m, args.record)))
        return
    extra = ("--record", str(args.record))
    kinds = {
        "slots": lambda w: run_child(str(SRC), w, args, *extra, script=parity_path.__file__),
        "rows": lambda w: run_child(str(SRC), w, args, *extra, script=__file__),
    }
    got = rounds(kinds, args)
    print(f"shared rows / slots, same rounds: median CPU ratio {ratio(got, 'rows', 'slots'):.2f}")


if __name__ == "__main__":
    main()

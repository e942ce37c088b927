"""The planner: pure functions from pieces of files and device slots to an ordered plan.

No I/O, no clock, no randomness: the same input always gives the same plan.

* Threshold T = ceil(total bytes / number of devices) (REQUIREMENTS P1).
* ``threshold`` strategy (P2): every piece larger than T is cut into segments of at most T;
  files and segments form one list sorted by size; each item goes, in list order, to the
  device that is least filled at that moment (P5) among those with room for it.
* ``fill`` strategy (P3): each device gets a share (equal bytes, or proportional to its
  weight, never above its room). Pieces are sorted by size; each goes to the least-filled
  device that still has share left; a piece larger than that device's remaining share is
  split there and the rest continues on the next least-filled device. Every device ends
  exactly at its share and at most (devices - 1) files are split.
* ``replan`` is the same function: survivors carry their current ``load``, and the shares
  are computed so that load + new bytes is balanced across them (R3).

"Least filled" means the smallest load / weight; ties go to the device with fewer items,
then the lower index. In the ``fill`` strategy a zero-byte item (an empty file, a
directory, a link) changes no device's fill, so it goes to the device with the fewest
items per weight (ties: least filled, then lower index): the devices end with as even a
count of items as the bytes allow, and so with even per-item work (a reader's restore
time goes largely per file). Without this, loads one byte apart sent every zero-byte
item to one device (27k against 40k records on a 67k-entry tree).
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from itertools import chain
from operator import attrgetter

from parbackup.errors import PlanError
from parbackup.model import Order, Piece, Pieces, Plan, Slot, Strategy


def threshold_of(total: int, devices: int) -> int:
    """T = total / devices, rounded up so that T * devices covers every byte."""
    if devices < 1:
        raise PlanError("no device to plan for")
    return -(-total // devices)


def sort_pieces(pieces: Sequence[Piece], order: Order) -> list[Piece]:
    """Sort by size (P4); ties by file number and offset so the order is total.

    Two stable sorts with C-level keys (a plan of a million files sorts in well under a
    second): by (file, offset), then by size; ``reverse`` keeps stability.
    """
    out = sorted(pieces, key=_BY_POSITION)
    out.sort(key=_BY_SIZE, reverse=order is Order.DESC)
    return out


_BY_POSITION = attrgetter("file", "offset")
_BY_SIZE = attrgetter("size")


def split_at_threshold(pieces: Sequence[Piece], threshold: int) -> list[Piece]:
    """Cut every piece larger than ``threshold`` into segments of at most ``threshold``."""
    out: list[Piece] = []
    for piece in pieces:
        if threshold <= 0 or piece.size <= threshold:
            out.append(piece)
            continue
        for start in range(0, piece.size, threshold):
            out.append(Piece(piece.file, piece.offset + start, min(threshold, piece.size - start)))
    return out


def shares_of(total: int, slots: Sequence[Slot]) -> list[int]:
    """Split ``total`` new bytes over ``slots`` so that (load + share) / weight is level.

    Water-filling: find the level L with sum(clamp(L*w - load, 0, room)) == total, solved
    exactly with fractions, then rounded to whole bytes by largest remainder. A device that
    already holds more than the level gets nothing; one whose room is below its part gets
    its room and the rest is shared among the others.
    """
    if not slots:
        raise PlanError("no device to plan for")
    rooms = [s.room for s in slots]
    if all(r is not None for r in rooms) and sum(r for r in rooms if r is not None) < total:
        room = sum(r for r in rooms if r is not None)
        raise PlanError(
            f"the backup needs {total} bytes but the devices have room for only {room} bytes"
        )
    if total == 0:
        return [0] * len(slots)
    weights = [Fraction(s.weight) for s in slots]
    if any(w <= 0 for w in weights):
        raise PlanError("device weights must be positive")

    def filled(level: Fraction) -> Fraction:
        acc = Fraction(0)
        for s, w in zip(slots, weights, strict=True):
            part = max(Fraction(0), level * w - s.load)
            if s.room is not None:
                part = min(part, Fraction(s.room))
            acc += part
        return acc

    # Breakpoints of the piecewise-linear filled(level): where a device starts or caps.
    points = sorted(
        {Fraction(s.load) / w for s, w in zip(slots, weights, strict=True)}
        | {
            Fraction(s.load + s.room) / w
            for s, w in zip(slots, weights, strict=True)
            if s.room is not None
        }
    )
    lo = Fraction(0)
    for point in points:
        if filled(point) >= total:
            break
        lo = point
    # On [lo, next point] filled() is linear: slope = sum of weights of devices in range.
    slope = sum(
        (
            w
            for s, w in zip(slots, weights, strict=True)
            if lo * w >= s.load and (s.room is None or lo * w - s.load < s.room)
        ),
        Fraction(0),
    )
    level = lo + (total - filled(lo)) / slope if slope else lo
    exact = []
    for s, w in zip(slots, weights, strict=True):
        part = max(Fraction(0), level * w - s.load)
        if s.room is not None:
            part = min(part, Fraction(s.room))
        exact.append(part)
    shares = [int(p) for p in exact]
    short = total - sum(shares)
    by_remainder = sorted(range(len(slots)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:short]:
        shares[i] += 1
    return shares


class _LeastFilled:
    """A heap of devices keyed by (load / weight, items so far, index)."""

    def __init__(self, slots: Sequence[Slot], usable: Sequence[bool]) -> None:
        self.load = [s.load for s in slots]
        self.count = [0] * len(slots)
        self.weight = [s.weight for s in slots]
        self.heap = [self._key(i) for i in range(len(slots)) if usable[i]]
        heapq.heapify(self.heap)

    def _key(self, i: int) -> tuple[float, int, int]:
        return (self.load[i] / self.weight[i], self.count[i], i)

    def pick(self, fits: Callable[[int], bool]) -> int | None:
        """Return the least-filled device for which ``fits(i)`` holds, or None."""
        passed = []
        found = None
        while self.heap:
            key = heapq.heappop(self.heap)
            if fits(key[2]):
                found = key[2]
                break
            passed.append(key)
        for key in passed:
            heapq.heappush(self.heap, key)
        return found

    def add(self, i: int, size: int) -> None:
        """Record ``size`` bytes on device ``i`` and put it back in the heap."""
        self.load[i] += size
        self.count[i] += 1
        heapq.heappush(self.heap, self._key(i))


_BLOCK = 1 << 18
"""Pieces sorted per block of this many, then merged: the order of one stable sort,
without a list of a million Python ints (36 MB) at once."""


def sorted_rows(
    pieces: Pieces, order: Order, block: int = _BLOCK, one_by_one: int = 4096
) -> Iterable[int]:
    """Row numbers of ``pieces`` sorted by size (P4), ties by (file, offset).

    Pieces in position order (a scan's) are sorted by size in blocks, each kept as an
    array, and the blocks merged (``_merge``) taking equal keys in block order, so the
    result is exactly one stable sort's; ``one_by_one``: see ``_merge``. Others (a
    replan's few) are sorted by position first, then stably by size.
    """
    n = len(pieces)
    file, offset, size = pieces.file, pieces.offset, pieces.size
    desc = order is Order.DESC
    if not pieces.ordered:
        rows = sorted(range(n), key=lambda k: (file[k], offset[k]))
        rows.sort(key=size.__getitem__, reverse=desc)
        return rows
    if n <= block:
        return sorted(range(n), key=size.__getitem__, reverse=desc)
    code = _narrowest(n)
    blocks = [
        array(code, sorted(range(lo, min(n, lo + block)), key=size.__getitem__, reverse=desc))
        for lo in range(0, n, block)
    ]
    return _merge(blocks, size, desc, one_by_one)


_SHORT = 16
"""A round of ``_merge`` that takes fewer rows than this on average is short."""


def _merge(blocks: list[array], size: Sequence[int], desc: bool, one_by_one: int) -> Iterator[int]:
    """The rows of ``blocks`` (consecutive ranges of rows, each sorted stably by size)
    in one stable sort's order, as ``heapq.merge`` gives them, faster when sizes repeat.

    Each round takes every row of the next size from each block in turn, as a slice
    found by bisection (a million small files have a thousand sizes: a thousand
    rounds, not a million steps of a heap in Python). Where sizes hardly repeat (large
    files), rounds are short, and about the next ``one_by_one`` rows (every row up to
    one key, from every block) go through ``heapq.merge``, which keeps the same order.
    The runs are chained in C: no Python frame stands between the planner and a row.
    """
    return chain.from_iterable(_runs(blocks, size, desc, one_by_one))


def _runs(
    blocks: list[array], size: Sequence[int], desc: bool, one_by_one: int
) -> Iterator[Iterable[int]]:
    """``_merge``'s runs of rows, in order: slices of blocks, or a heap merge of some."""
    key = (lambda r: -size[r]) if desc else size.__getitem__
    pos = [0] * len(blocks)
    live = [b for b, rows in enumerate(blocks) if rows]
    rounds = taken = 0
    while live:
        if rounds >= 8 and taken < _SHORT * rounds:  # short rounds: through a heap
            first = min(live, key=lambda b: key(blocks[b][pos[b]]))  # the least head
            last = min(pos[first] + one_by_one, len(blocks[first])) - 1
            cut = key(blocks[first][last])  # every row up to this key, from every block
            runs = []
            for b in live:
                hi = bisect_right(blocks[b], cut, pos[b], key=key)
                runs.append(blocks[b][pos[b] : hi])
                pos[b] = hi
            yield heapq.merge(*runs, key=size.__getitem__, reverse=desc)
            rounds = taken = 0
        else:
            least = min(key(blocks[b][pos[b]]) for b in live)
            for b in live:
                rows, lo = blocks[b], pos[b]
                hi = bisect_right(rows, least, lo, key=key)
                if hi > lo:
                    yield rows[lo:hi]
                    taken += hi - lo
                    pos[b] = hi
            rounds += 1
        live = [b for b in live if pos[b] < len(blocks[b])]


def _split(pieces: Pieces, threshold: int) -> Pieces:
    """Cut every piece larger than ``threshold`` into segments of at most ``threshold``."""
    if threshold <= 0 or max(pieces.size, default=0) <= threshold:
        return pieces
    out = Pieces()
    for f, o, sz in zip(pieces.file, pieces.offset, pieces.size, strict=True):
        if sz <= threshold:
            out.append(f, o, sz)
            continue
        for start in range(0, sz, threshold):
            out.append(f, o + start, min(threshold, sz - start))
    return out


def _narrowest(top: int) -> str:
    """The array type for values in [0, ``top``]: 4 bytes when they fit, else 8."""
    return "I" if top < 1 << 32 else "q"


class _Out:
    """The plan's columns as they are filled, each as narrow as the pieces allow (a
    million items: 13 MB, not 26): file numbers and byte positions in 4 bytes while
    they fit (files under 4 GiB), device numbers in one byte up to 256 devices."""

    def __init__(self, pieces: Pieces, devices: int) -> None:
        ends = max(pieces.offset, default=0) + max(pieces.size, default=0)
        self.file, self.offset, self.size, self.device = (
            array(_narrowest(max(pieces.file, default=0))),
            array(_narrowest(ends)),
            array(_narrowest(ends)),
            array("B" if devices <= 0x100 else "H"),
        )

    def add(self, file: int, offset: int, size: int, device: int) -> None:
        self.file.append(file)
        self.offset.append(offset)
        self.size.append(size)
        self.device.append(device)


def _plan_threshold(pieces: Pieces, slots: Sequence[Slot], order: Order, threshold: int) -> _Out:
    room = [s.room for s in slots]
    # Every device stays in the heap, full ones too: an empty file or a directory (a
    # zero-byte item) fits anywhere, even when every device is full (a replan after a
    # failure may place nothing else).
    heap = _LeastFilled(slots, [True] * len(slots))
    pieces = _split(pieces, threshold)
    out = _Out(pieces, len(slots))
    file, offsets, sizes = pieces.file, pieces.offset, pieces.size
    for k in sorted_rows(pieces, order):
        left, offset, fid = sizes[k], offsets[k], file[k]
        # Whole on the least-filled device with room; cut across devices only if none has.
        dev = heap.pick(lambda i, need=left: room[i] is None or room[i] >= need)
        if dev is None:
            dev = heap.pick(lambda i: room[i] is None or room[i] > 0)
        while True:
            if dev is None:
                raise PlanError("the devices ran out of room while placing the plan")
            take = left if room[dev] is None else min(left, room[dev])
            out.add(fid, offset, take, dev)
            if room[dev] is not None:
                room[dev] -= take
            offset += take
            left -= take
            heap.add(dev, take)
            if left == 0:
                break
            dev = heap.pick(lambda i: room[i] is None or room[i] > 0)
    return out


def _plan_fill(pieces: Pieces, slots: Sequence[Slot], order: Order) -> _Out:
    """The fill strategy; the same choices as ``_LeastFilled``, inlined for speed.

    Heap keys are unique (they end in the device number), so which device is least
    filled never depends on how the heap is laid out: replacing the top in place picks
    exactly what popping and pushing would.
    """
    left = shares_of(pieces.total(), slots)
    load = [s.load for s in slots]
    weight = [s.weight for s in slots]
    count = [0] * len(slots)
    devices = range(len(slots))
    heap = [(load[i] / weight[i], 0, i) for i in devices]
    heapq.heapify(heap)
    out = _Out(pieces, len(slots))
    o_file, o_off, o_size, o_dev = (
        out.file.append,
        out.offset.append,
        out.size.append,
        (out.device.append),
    )
    file, offsets, sizes = pieces.file, pieces.offset, pieces.size
    replace, push, pop = heapq.heapreplace, heapq.heappush, heapq.heappop
    fewest: list[tuple[float, float, int]] = []  # while a run of zero-byte items lasts
    for k in sorted_rows(pieces, order):
        remaining = sizes[k]
        fid = file[k]
        if remaining == 0:
            if not fewest:  # a run starts: fewest items per weight first
                fewest = [(count[i] / weight[i], load[i] / weight[i], i) for i in devices]
                heapq.heapify(fewest)
            dev = fewest[0][2]
            o_file(fid), o_off(offsets[k]), o_size(0), o_dev(dev)
            count[dev] += 1
            replace(fewest, (count[dev] / weight[dev], load[dev] / weight[dev], dev))
            continue
        if fewest:  # the run ended: the byte heap's item counts are stale
            fewest = []
            heap = [(load[i] / weight[i], count[i], i) for i in devices]
            heapq.heapify(heap)
        dev = heap[0][2]
        if remaining < left[dev]:  # most items: whole on the least filled, within its
            o_file(fid)  # share (what the loop below does in one round, without its
            o_off(offsets[k])  # list and loops: a million small files, 2.2 -> 1.6 us
            o_size(remaining)  # an item)
            o_dev(dev)
            left[dev] -= remaining
            now = load[dev] = load[dev] + remaining
            n = count[dev] = count[dev] + 1
            replace(heap, (now / weight[dev], n, dev))
            continue
        offset = offsets[k]
        while remaining:
            dev = heap[0][2]
            passed = []
            while left[dev] <= 0:  # least filled but its share is used up: look further
                passed.append(pop(heap))
                if not heap:  # pragma: no cover - shares always sum to total
                    raise PlanError("internal error: shares do not cover the data")
                dev = heap[0][2]
            take = remaining if remaining < left[dev] else left[dev]
            o_file(fid), o_off(offset), o_size(take), o_dev(dev)
            left[dev] -= take
            offset += take
            remaining -= take
            load[dev] += take
            count[dev] += 1
            replace(heap, (load[dev] / weight[dev], count[dev], dev))
            for key in passed:
                push(heap, key)
    return out


def plan(
    pieces: Pieces | Iterable[Piece],
    slots: Sequence[Slot],
    strategy: Strategy = Strategy.FILL,
    order: Order = Order.DESC,
) -> Plan:
    """Place ``pieces`` on the devices described by ``slots`` (pure, deterministic).

    Raises PlanError before anything is written when the data cannot fit.
    """
    if not slots:
        raise PlanError("no device to plan for")
    if len(slots) > 0xFFFF:
        raise PlanError("too many devices")
    pieces = Pieces.of(pieces)
    total = pieces.total()
    threshold = threshold_of(total + sum(s.load for s in slots), len(slots))
    shares = shares_of(total, slots)  # also checks that everything fits
    if strategy is Strategy.THRESHOLD:
        out = _plan_threshold(pieces, slots, order, threshold)
    else:
        out = _plan_fill(pieces, slots, order)
    return Plan(
        strategy, order, threshold, tuple(shares), out.file, out.offset, out.size, out.device
    )


def coalesce(pieces: Iterable[Piece]) -> list[Piece]:
    """Merge touching or overlapping ranges of the same file so a replan sees whole runs.

    Overlaps are merged too (their union), so callers may hand in a range twice (a
    record made durable and the item it belongs to) without a byte being planned twice.
    Zero-byte pieces stay as they are (an empty file or a directory is one item).
    """
    out: list[Piece] = []
    for p in sorted(pieces, key=lambda p: (p.file, p.offset, p.size)):
        last = out[-1] if out else None
        if (
            last
            and last.file == p.file
            and p.size
            and last.size
            and p.offset <= last.offset + last.size
        ):
            end = max(last.offset + last.size, p.offset + p.size)
            out[-1] = Piece(last.file, last.offset, end - last.offset)
        elif (
            last
            and last.file == p.file
            and not p.size
            and last.offset <= p.offset <= last.offset + last.size
            and (last.size or p.offset == last.offset)
        ):
            continue  # an empty piece inside (or equal to) a range already there
        else:
            out.append(p)
    return out


def replan(
    remaining: Pieces | Iterable[Piece],
    survivors: Sequence[Slot],
    strategy: Strategy,
    order: Order,
) -> Plan:
    """Plan the work a failed device left behind over the survivors (R2, R3).

    Each survivor's ``load`` is what it already holds in this run, so that the final
    loads, not only the redirected bytes, come out balanced.
    """
    return plan(remaining, survivors, strategy, order)

"""Summarise a ``py-spy record --threads --idle -f raw`` profile: per thread, where time goes.

    py-spy record -r 200 --threads --idle -f raw -o prof.txt -- python -m parbackup ...
    python bench/spysum.py prof.txt [--top 12]

Prints, for each thread, its samples and the functions with the most self samples (the
leaf frame) and the most inclusive samples, so a multi-threaded run can be read at once.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict


def frame_name(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)"
    m = re.match(r"(.*) \((.*?)([^/]*)\)$", frame.strip())
    return f"{m.group(1)} ({m.group(3)})" if m else frame.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    self_t: dict[str, Counter] = defaultdict(Counter)
    incl: dict[str, Counter] = defaultdict(Counter)
    total: Counter = Counter()
    with open(args.profile) as fh:
        lines = fh.readlines()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        # py-spy writes "thread (tid)" or "thread (tid): name" as the first frame
        thread, rest = frames[0], frames[1:]
        if ":" in thread and "(" not in thread.split(":", 1)[1]:
            thread = thread.split(":", 1)[1].strip()
        names = [frame_name(f) for f in rest]
        n = int(count)
        total[thread] += n
        if names:
            self_t[thread][names[-1]] += n
            for name in set(names):
                incl[thread][name] += n
    for thread, n in total.most_common():
        print(f"== {thread}: {n} samples")
        print("  self:")
        for name, c in self_t[thread].most_common(args.top):
            print(f"    {100 * c / n:5.1f}%  {name}")
        print("  inclusive:")
        for name, c in incl[thread].most_common(args.top):
            print(f"    {100 * c / n:5.1f}%  {name}")


if __name__ == "__main__":
    main()

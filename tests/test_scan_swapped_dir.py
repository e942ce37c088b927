"""A directory swapped while the tree is scanned (between its parent's listing and its
own opening) is reported as replaced, whatever it became: a symlink (to a place outside
the tree), a regular file, or another directory. Never walked into. (review, session 6:
on Linux, opening a symlink with ``O_NOFOLLOW | O_DIRECTORY`` fails with ENOTDIR, not
ELOOP, so the swap was reported as a bare "Not a directory".)

The swap is real (rename and symlink on the filesystem), made after ``scan_top`` listed
the root and before ``scan_under`` walks what it found, as a split scan's helper does
(engine/splitscan.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parbackup.entries import Entries
from parbackup.sources.base import SourceSpec
from parbackup.sources.local import LocalTree


def _swap(tree: Path, outside: Path, into: str) -> None:
    os.rename(tree / "b", tree.parent / "b-moved")
    if into == "symlink":
        os.symlink(outside, tree / "b")
    elif into == "file":
        (tree / "b").write_bytes(b"now a file")
    else:
        (tree / "b").mkdir()


@pytest.mark.parametrize("into", ["symlink", "file", "directory"])
def test_a_directory_swapped_after_it_was_listed_is_reported_as_replaced(
    tmp_path: Path, into: str
) -> None:
    tree, outside = tmp_path / "src", tmp_path / "outside"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "b" / "inside").write_bytes(b"i")
    outside.mkdir()
    (outside / "SECRET").write_bytes(b"s")
    scanner = LocalTree(SourceSpec("tree", str(tree), str(tree)))
    out, problems = Entries(), []
    tops = scanner.scan_top(out, 0, lambda p, e: problems.append((p, e)))
    _swap(tree, outside, into)
    scanner.scan_under(out, 0, lambda p, e: problems.append((p, e)), tops)
    paths = [out.path_bytes(i) for i in range(len(out))]
    assert not any(p.endswith((b"/SECRET", b"/inside")) for p in paths)
    assert problems == [(str(tree / "b"), problems[0][1])]
    assert problems[0][1].startswith("replaced since it was listed"), problems

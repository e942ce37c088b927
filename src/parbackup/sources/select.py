"""The selection a local tree scan applies (``ScanRules``), compiled for one scan.

Each entry of the tree is asked once, when its directory is listed, and an entry that is
left out is never recorded; a directory left out is never entered. The rules, in the
order they are tried (the first that matches names the entry in the counts):

- automatic: a backup device or the catalog inside the source (their exact paths);
- ``--exclude PATTERN`` (parbackup.selection: gitignore-style, on the absolute path);
- ``--exclude-if-present NAME``: a directory holding an entry NAME is left out whole
  (NAME included);
- ``--exclude-caches``: a directory holding a file CACHEDIR.TAG that begins with the
  signature of https://bford.info/cachedir/ is left out whole;
- ``--one-file-system``: a directory on another filesystem than the source root (a
  mount point) is recorded, empty, and not entered; any other entry on another
  filesystem (a file bind-mounted in) is left out.
"""

from __future__ import annotations

import os
import stat

from parbackup.selection import ExcludePatterns, ScanRules

CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
ONE_FILE_SYSTEM = "--one-file-system"
CACHES = "--exclude-caches"


def is_cache_dir(directory: bytes) -> bool:
    """True when ``directory`` holds a CACHEDIR.TAG file with the right signature."""
    try:
        fd = os.open(os.path.join(directory, CACHEDIR_TAG), _OPEN)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.pread(fd, len(CACHEDIR_SIGNATURE), 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head == CACHEDIR_SIGNATURE


class TreeFilter:
    """``ScanRules`` ready for one scan of a tree whose root is on device ``root_dev``."""

    def __init__(self, rules: ScanRules, root_dev: int) -> None:
        self.automatic = {os.fsencode(path): why for path, why in rules.automatic}
        self.patterns = ExcludePatterns(rules.patterns) if rules.patterns else None
        self.tags = [(os.fsencode(n), f"--exclude-if-present {n}") for n in rules.if_present]
        self.caches = rules.caches
        self.root_dev = root_dev if rules.one_file_system else None

    def rule(self, path: bytes, read_path: bytes, st: os.stat_result) -> str:
        """The rule that leaves out the entry recorded as ``path`` ("" keeps it).

        ``read_path`` is where it is read from (a snapshot's copy, or ``path`` itself).
        """
        return self.named_rule(path, stat.S_ISDIR(st.st_mode)) or self.found_rule(read_path, st)

    def named_rule(self, path: bytes, is_dir: bool) -> str:
        """The automatic or ``--exclude`` rule that leaves out ``path``, told by its name
        and whether it is a directory alone: the scan asks it with the directory entry's
        type, before any ``stat``, so an excluded hung mount is never looked at (as
        ``tar --exclude``)."""
        if self.automatic and path in self.automatic:
            return self.automatic[path]
        if self.patterns is not None:
            pattern = self.patterns.rule_for(os.fsdecode(path), is_dir)
            if pattern:
                return f"--exclude {pattern}"
        return ""

    def found_rule(self, read_path: bytes, st: os.stat_result) -> str:
        """The rule that leaves out an entry by what its ``stat`` and contents say (a tag
        file, a cache directory, another filesystem); ``named_rule`` is asked first."""
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir:
            for tag, rule in self.tags:
                if os.path.lexists(os.path.join(read_path, tag)):
                    return rule
            if self.caches and is_cache_dir(read_path):
                return CACHES
        elif self.root_dev is not None and st.st_dev != self.root_dev:
            return ONE_FILE_SYSTEM
        return ""

    def enter(self, st: os.stat_result) -> bool:
        """Whether to go into a kept directory (not into another filesystem)."""
        return self.root_dev is None or st.st_dev == self.root_dev

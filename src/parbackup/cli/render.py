"""What the CLI prints, and how: the only module that writes human output.

Rules (the CLI contract, see README "Output"):

- User data is never markup: every string goes out as a rich ``Text`` (or plain text),
  so a file named ``[bold]`` or ``]`` is printed as it is named.
- A name is shown on one line: control characters and bytes that are not valid UTF-8 are
  shown as backslash escapes (``\\n``, ``\\xff``); ``--json`` carries the exact name.
- On a terminal, tables are drawn by rich (folded, never cut); when stdout is not a
  terminal (a pipe, cron, a file) they are plain tab-separated lines with full values.
- ``-q`` prints only problems (damaged, skipped, failed); ``-v`` adds detail on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import click

from parbackup.progress import DeviceBytes, DeviceFailed, Event, FileDone, Notice, Started

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

log = logging.getLogger("parbackup.cli")

_consoles: dict[bool, Console] = {}


def console(stderr: bool) -> Console:
    """rich's console for stderr or stdout, made at its first use: rich (~30 ms of CPU
    on the controller's serial start) is imported only by a command that prints through
    it, not by one under ``--json`` that has nothing else to say."""
    got = _consoles.get(stderr)
    if got is None:
        from rich.console import Console

        got = _consoles[stderr] = Console(stderr=stderr, highlight=False)
    return got


QUIET, NORMAL = -1, 0
_verbosity = NORMAL


def set_verbosity(level: int) -> None:
    """-1 quiet (-q), 0 normal, 1 and more verbose (-v, -vv)."""
    global _verbosity
    _verbosity = level


def is_quiet() -> bool:
    return _verbosity <= QUIET


def printable(text: str) -> str:
    """``text`` on one line: control characters and undecodable bytes as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _plain(text: str, stream: TextIO) -> None:
    """Write one line to a non-terminal stream, whatever its encoding."""
    enc = getattr(stream, "encoding", None) or "utf-8"
    click.echo(text.encode(enc, "backslashreplace").decode(enc), file=stream)


def line(text: str, *, problem: bool = False) -> None:
    """Print one line on stdout (a ``problem`` line is printed even under ``-q``)."""
    if is_quiet() and not problem:
        return
    text = printable(text)
    out = console(stderr=False)
    if out.is_terminal:
        from rich.text import Text

        out.print(Text(text), soft_wrap=True)
    else:
        _plain(text, sys.stdout)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a summary table on stdout (tab-separated lines when not a terminal)."""
    if is_quiet():
        return
    cells = [[printable(c) for c in row] for row in rows]
    out = console(stderr=False)
    if not out.is_terminal:
        _plain(printable(title), sys.stdout)
        for row in [columns, *cells]:
            _plain("\t".join(row), sys.stdout)
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(printable(title)), title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in cells:
        t.add_row(*(Text(c) for c in row))
    out.print(t)


def damaged_lines(damaged: list[dict], say: Callable[..., None] = line) -> None:
    """A ``DAMAGED:`` problem line for each damaged file a restore or verify met, or
    volume: damage in no file's bytes (a cut end record, a bad header, the record of an
    entry a restore takes from the catalog, ``entry``) has no path and names its volume
    (``volume``), which the line names instead."""
    for d in damaged:
        what = d["path"] or f"volume {d.get('volume') or '(unnamed)'}"
        error = f"record of {d['entry']}: {d['error']}" if d.get("entry") else d["error"]
        say(f"DAMAGED: {what} ({d['device']}): {error}", problem=True)


def warn(text: str, style: str = "", *, problem: bool = False) -> None:
    """A message on stderr while a command runs (under ``-q`` only a ``problem``)."""
    log.debug("%s", text)
    if is_quiet() and not problem:
        return
    text = printable(text)
    err = console(stderr=True)
    if err.is_terminal:
        from rich.text import Text

        err.print(Text(text, style=style), soft_wrap=True)
    else:
        _plain(text, sys.stderr)


class ProgressView:
    """Turns engine events into a total bar plus one bar per device."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total: TaskID | None = None
        self.per_device: dict[str, TaskID] = {}
        self.files = 0

    def _warn(self, msg: str, style: str) -> None:
        if self.progress is None:
            warn(msg, style)
        else:
            log.debug("%s", msg)
            from rich.text import Text

            self.progress.console.print(Text(printable(msg), style=style), soft_wrap=True)

    def __call__(self, event: Event) -> None:
        p = self.progress
        match event:
            case FileDone():  # first: one a file (a restore of a million files: a million)
                self.files += 1
            case Started(
                operation=op, files=files, total_bytes=total, devices=devices, device_bytes=sizes
            ):
                if p is None:
                    return
                self.total = p.add_task(f"{op} ({files} files)", total=total or None)
                for i, dev in enumerate(devices):
                    size = sizes[i] if i < len(sizes) else None
                    self.per_device[dev] = p.add_task(f"  {printable(dev)}", total=size or None)
            case DeviceBytes(device=dev, nbytes=n):
                if p is None:
                    return
                if self.total is not None:
                    p.advance(self.total, n)
                if dev in self.per_device:
                    p.advance(self.per_device[dev], n)
            case DeviceFailed(device=dev, reason=reason, redirected=moved):
                msg = f"device failed: {dev}: {reason}"
                if moved:
                    msg += f" ({moved} bytes redirected to the other devices)"
                self._warn(msg, "red")
            case Notice(message=msg):
                self._warn(msg, "yellow")


@contextmanager
def progress_view(enabled: bool) -> Iterator[ProgressView]:
    """A ProgressView with live bars when ``enabled``, not quiet, and stderr a terminal."""
    if not enabled or is_quiet() or not console(stderr=True).is_terminal:
        yield ProgressView(None)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )
    with progress:
        yield ProgressView(progress)

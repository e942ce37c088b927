"""Rendering progress events and summaries with rich (only on a terminal for progress)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from parbackup.progress import DeviceBytes, DeviceFailed, Event, FileDone, Notice, Started

err_console = Console(stderr=True)
out_console = Console()


class ProgressView:
    """Turns engine events into a total bar plus one bar per device."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total: TaskID | None = None
        self.per_device: dict[str, TaskID] = {}
        self.files = 0

    def __call__(self, event: Event) -> None:
        p = self.progress
        match event:
            case Started(
                operation=op, files=files, total_bytes=total, devices=devices, device_bytes=sizes
            ):
                if p is None:
                    return
                self.total = p.add_task(f"{op} ({files} files)", total=total or None)
                for i, dev in enumerate(devices):
                    size = sizes[i] if i < len(sizes) else None
                    self.per_device[dev] = p.add_task(f"  {dev}", total=size or None)
            case DeviceBytes(device=dev, nbytes=n):
                if p is None:
                    return
                if self.total is not None:
                    p.advance(self.total, n)
                if dev in self.per_device:
                    p.advance(self.per_device[dev], n)
            case FileDone():
                self.files += 1
            case DeviceFailed(device=dev, reason=reason, redirected=moved):
                msg = f"device failed: {dev}: {reason}"
                if moved:
                    msg += f" ({moved} bytes redirected to the other devices)"
                (p.console if p else err_console).print(
                    f"[red]{msg}[/red]", highlight=False, soft_wrap=True
                )
            case Notice(message=msg):
                (p.console if p else err_console).print(
                    f"[yellow]{msg}[/yellow]", highlight=False, soft_wrap=True
                )


@contextmanager
def progress_view(enabled: bool) -> Iterator[ProgressView]:
    """A ProgressView with live bars when ``enabled`` and stderr is a terminal."""
    if not enabled or not err_console.is_terminal:
        yield ProgressView(None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        yield ProgressView(progress)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a summary table on stdout."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    out_console.print(t)


def line(text: str) -> None:
    """Print a plain line on stdout."""
    out_console.print(text, highlight=False, soft_wrap=True)


def is_tty() -> bool:
    return sys.stderr.isatty()

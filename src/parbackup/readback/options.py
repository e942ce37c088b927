"""What a restore is asked to do (``RestoreOptions``) and what it did (``RestoreReport``).

Kept apart from the restore flow (readback/restore.py) so that the other ways of
reading a set back (onto a block device, to stdout) report in the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parbackup.crypto.codec import CodecSpec
from parbackup.workers import Executor


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore, and where."""

    target: str
    set_ref: str | None = None
    includes: tuple[str, ...] = ()
    overwrite: bool = False
    devices: tuple[str, ...] = ()
    codec: CodecSpec | None = None
    """The key (and compression) of an encrypted set; None for a plain one."""
    executor: Executor | None = field(default=None, compare=False, repr=False)
    """Where the readers run (``--cluster``); None: local processes."""


@dataclass
class RestoreReport:
    """The outcome of a restore; ``to_json`` gives the ``restore --json`` document."""

    set_id: str
    target: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    damaged: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    """Entries not recreated: the set does not hold them (changed or unreadable while
    backed up), or this user may not make them (device nodes without privilege)."""
    grown: list[dict] = field(default_factory=list)
    """Files that grew while they were backed up: restored as they were read."""
    left_out: list[dict] = field(default_factory=list)
    """Entries restored without some of their metadata (extended attributes, ACLs,
    capabilities, owner) because the target could not take it; each names what."""
    rebuilt: list[str] = field(default_factory=list)
    """Labels of missing devices read around with parity (readback/recover.py)."""

    @property
    def status(self) -> str:
        return "damaged" if self.damaged else "ok"

    @property
    def exit_code(self) -> int:
        return (
            1
            if self.damaged
            else 3
            if self.skipped or self.grown or self.left_out or self.rebuilt
            else 0
        )

    def to_json(self) -> dict:
        return {
            "set": self.set_id,
            "status": self.status,
            "target": self.target,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "damaged": self.damaged,
            **({"skipped": self.skipped} if self.skipped else {}),
            **({"grown": self.grown} if self.grown else {}),
            **({"left_out": self.left_out} if self.left_out else {}),
            **({"missing": self.rebuilt} if self.rebuilt else {}),
        }

    def damage(self, path: str, device: str, error: str) -> None:
        """Name one file that was not restored, and why."""
        self.damaged.append({"path": path, "device": device, "error": error})

"""What a backup is asked to do (BackupOptions) and what it did (BackupReport)."""

from __future__ import annotations

from dataclasses import dataclass, field

from parbackup.crypto.codec import CodecSpec
from parbackup.format import CHUNK
from parbackup.model import DeviceReport, Order, Skipped, Strategy
from parbackup.plan.pacing import Balance
from parbackup.selection import NO_SELECTION, ScanRules


@dataclass(frozen=True)
class BackupOptions:
    """How to run a backup."""

    strategy: Strategy = Strategy.FILL
    order: Order = Order.DESC
    device_timeout: float = 60.0
    chunk: int = CHUNK
    checkpoint_bytes: int = 256 << 20
    incremental: bool = False
    rehash: bool = False
    snapshot: str = ""
    pre_command: str = ""
    post_command: str = ""
    read_roots: tuple[tuple[str, str], ...] = ()
    balance: Balance = Balance.BYTES
    stream_buffers: int = 0
    stream_segment: int = 8 << 20
    """Stream segments held in memory at most (0: two per device, plus one)."""
    select: ScanRules = NO_SELECTION
    """What the scan of local trees leaves out (excludes, tags, one filesystem)."""
    created: str = ""
    """The set's time in the catalog (ISO 8601, UTC; ``backup --time``), '' for now."""
    codec: CodecSpec | None = None
    """Compression and encryption of the set's records (None: neither; format 1-2)."""
    key_file: bytes = b""
    """The key file (wrapped key, no secret) an encrypted set puts on every device."""
    parity: int = 0
    """``--parity m``: the last m devices hold parity (engine/parity.py)."""
    xattrs: bool = True
    """Read and keep extended attributes, ACLs, capabilities (``--no-xattrs``: not)."""


@dataclass
class BackupReport:
    """The outcome of a backup; ``to_json`` gives the documented ``backup --json`` shape."""

    set_id: str
    status: str
    strategy: str
    order: str
    threshold: int
    files: int
    bytes: int
    seconds: float
    devices: list[DeviceReport]
    skipped: list[Skipped] = field(default_factory=list)
    error: str = ""
    kind: str = "full"
    reused: int = 0
    inconsistent: list[Skipped] = field(default_factory=list)
    grown: list[Skipped] = field(default_factory=list)
    """Files that only grew while read: kept as read (up to their scanned size) and
    restorable, with a warning."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Entries the selection left out, per rule."""
    parity: dict = field(default_factory=dict)
    """With ``--parity``: devices, and the redundancy the set has (engine/parity.py)."""
    lacking: list[Skipped] = field(default_factory=list)
    """Volumes of earlier sets this incremental (or resumed) run found gone or cut short
    on their devices (path: the volume, error: where and why): the files it would have
    reused from them were copied again, and the sets that list them are damaged."""

    @property
    def exit_code(self) -> int:
        """0 clean, 3 done with warnings, 1 failed."""
        if self.status == "failed":
            return 1
        warnings = self.skipped or self.inconsistent or self.grown or "error" in self.parity
        warnings = warnings or self.lacking or self.error  # (a lost run lock: engine/backup.py)
        return 3 if self.status == "degraded" or warnings else 0

    def balance(self) -> dict:
        """How evenly the devices that finished hold the set's bytes."""
        loads = [d.bytes for d in self.devices if d.status == "ok"]
        if not loads:
            return {"devices": 0, "min_bytes": 0, "max_bytes": 0, "spread_bytes": 0}
        return {
            "devices": len(loads),
            "min_bytes": min(loads),
            "max_bytes": max(loads),
            "spread_bytes": max(loads) - min(loads),
        }

    def to_json(self) -> dict:
        """The ``backup --json`` document."""
        out = {
            "set": self.set_id,
            "status": self.status,
            "strategy": self.strategy,
            "order": self.order,
            "threshold": self.threshold,
            "kind": self.kind,
            "files": self.files,
            "bytes": self.bytes,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "devices": [
                {
                    "url": d.url,
                    "label": d.label,
                    "status": d.status,
                    "bytes": d.bytes,
                    "segments": d.segments,
                    "seconds": round(d.seconds, 3),
                    **(
                        {"error": d.error, "failed_at": d.failed_at, "failed_utc": d.failed_utc}
                        if d.status == "failed"
                        else {}
                    ),
                    **({"redirected": d.redirected} if d.redirected else {}),
                    **{
                        k: getattr(d, k)
                        for k in ("speed", "predicted", "finished", "moved")
                        if getattr(d, k)
                    },
                }
                for d in self.devices
            ],
            "balance": self.balance(),
            "skipped": [{"path": s.path, "error": s.error} for s in self.skipped],
            "inconsistent": [{"path": s.path, "error": s.error} for s in self.inconsistent],
            "grown": [{"path": s.path, "error": s.error} for s in self.grown],
            "excluded": dict(self.excluded),
        }
        if self.parity:
            out["parity"] = dict(self.parity)
        if self.lacking:
            out["lacking"] = [{"volume": s.path, "error": s.error} for s in self.lacking]
        if self.error:
            out["error"] = self.error
        return out

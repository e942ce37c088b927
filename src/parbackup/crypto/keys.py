"""The key model: one random master key, wrapped by one or more passphrases.

A key file (JSON, see docs/FORMAT.md "Keys") holds the master key's id and one *slot*
per passphrase: the master key encrypted with AES-256-GCM under a key-encryption key that
scrypt derives from the passphrase and the slot's random salt. Adding or removing a
passphrase rewrites only this small file, never a volume: every record is sealed with
keys derived from the master key, which does not change.

The key file lives beside the catalog (``<catalog>.key``) and a copy goes to every
device of an encrypted set (``keys/<key id>.json``), so ``rebuild-catalog`` works from
the devices and a passphrase alone. A key file holds nothing that opens data without a
passphrase; the master key itself is never written anywhere, logged or printed.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from parbackup.crypto.aead import primitives
from parbackup.errors import KeyUnlockError, ParbackupError, UsageError
from parbackup.fileio import NotDurableError, open_regular, write_synced

KEY_FILE_FORMAT = "parbackup-key"
KEY_FILE_VERSION = 1
MASTER_KEY_SIZE = 32
SCRYPT_N = 1 << 15
"""scrypt cost: 32 MiB of memory and ~0.1 s per unlock on one core."""
SCRYPT_R = 8
SCRYPT_P = 1
MAX_KEY_FILE = 1 << 20
MAX_SCRYPT_MEMORY = 256 << 20
"""A key file from a device is not trusted: its scrypt parameters may ask for at most
this much memory (128 * n * r bytes) and p <= 4, so a crafted one cannot exhaust it."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyUnlockError(f"key file: {what} is not text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise KeyUnlockError(f"key file: {what} is not base64") from exc


@dataclass(frozen=True)
class Slot:
    """The master key wrapped by one passphrase."""

    slot: int
    salt: bytes
    nonce: bytes
    wrapped: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    created: str = ""

    def kek(self, passphrase: bytes) -> bytes:
        """The key-encryption key this passphrase gives for this slot."""
        kdf = primitives().Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p)
        return kdf.derive(passphrase)

    def aad(self, key_id: bytes) -> bytes:
        """What the wrapping binds: the master key's id and this slot's parameters."""
        return b"parbackup key slot\0" + key_id + f"{self.slot}:{self.n}:{self.r}:{self.p}".encode()


@dataclass
class KeyFile:
    """A master key's id and its passphrase slots (no secret in the clear)."""

    key_id: bytes
    slots: list[Slot] = field(default_factory=list)

    @property
    def key_hex(self) -> str:
        return self.key_id.hex()

    # -- creating and unlocking ------------------------------------------------------------
    @classmethod
    def create(cls, passphrase: bytes) -> tuple[KeyFile, bytes]:
        """A new random master key wrapped by ``passphrase``: (key file, master key)."""
        _check_passphrase(passphrase)
        keyfile = cls(os.urandom(16))
        master = os.urandom(MASTER_KEY_SIZE)
        keyfile.add(master, passphrase)
        return keyfile, master

    def add(self, master: bytes, passphrase: bytes) -> Slot:
        """Wrap the (unlocked) master key with one more passphrase."""
        _check_passphrase(passphrase)
        number = max((s.slot for s in self.slots), default=0) + 1
        salt, nonce = os.urandom(16), os.urandom(12)
        draft = Slot(number, salt, nonce, b"", created=_now())
        cipher = primitives().AESGCM(draft.kek(passphrase))
        wrapped = cipher.encrypt(nonce, master, draft.aad(self.key_id))
        slot = Slot(number, salt, nonce, wrapped, created=draft.created)
        self.slots.append(slot)
        return slot

    def unlock(self, passphrase: bytes) -> tuple[bytes, int]:
        """(master key, slot number) for ``passphrase``; KeyUnlockError when it opens no
        slot (a wrong passphrase), before anything is read or written."""
        for slot in self.slots:
            try:
                master = (
                    primitives()
                    .AESGCM(slot.kek(passphrase))
                    .decrypt(slot.nonce, slot.wrapped, slot.aad(self.key_id))
                )
            except primitives().InvalidTag:
                continue
            if len(master) == MASTER_KEY_SIZE:
                return master, slot.slot
        raise KeyUnlockError(f"wrong passphrase: it opens no slot of key {self.key_hex[:12]}")

    def remove(self, number: int, *, opened: int | None = None) -> None:
        """Drop a slot; the last one cannot go (the data would be lost for good), nor
        the one ``opened`` (the slot the caller's passphrase unlocked): a passphrase
        that stays must have been shown to open the key, or a removal could leave only
        slots nobody can open (a new passphrase mistyped into its file, say)."""
        if not any(s.slot == number for s in self.slots):
            raise UsageError(f"key {self.key_hex[:12]} has no slot {number}")
        if len(self.slots) == 1:
            raise UsageError("cannot remove the last passphrase of a key")
        if number == opened:
            raise UsageError(
                f"slot {number} is the one the passphrase given opens: give the passphrase "
                "of a slot that stays (that proves the key still opens after), then "
                f"remove slot {number}"
            )
        self.slots = [s for s in self.slots if s.slot != number]

    # -- (de)serialising -------------------------------------------------------------------
    def to_json(self) -> bytes:
        doc = {
            "format": KEY_FILE_FORMAT,
            "version": KEY_FILE_VERSION,
            "key_id": self.key_hex,
            "cipher": "aes-256-gcm",
            "slots": [
                {
                    "slot": s.slot,
                    "kdf": "scrypt",
                    "n": s.n,
                    "r": s.r,
                    "p": s.p,
                    "salt": _b64(s.salt),
                    "nonce": _b64(s.nonce),
                    "wrapped": _b64(s.wrapped),
                    "created": s.created,
                }
                for s in self.slots
            ],
        }
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = "key file") -> KeyFile:
        """Parse a key file; KeyUnlockError naming ``where`` when it is malformed."""
        try:
            doc = json.loads(data[:MAX_KEY_FILE])
            if doc.get("format") != KEY_FILE_FORMAT or doc.get("version") != KEY_FILE_VERSION:
                raise KeyUnlockError(f"{where}: not a parbackup key file of a known version")
            key_id = bytes.fromhex(doc["key_id"])
            slots = []
            for s in doc["slots"]:
                n, r, p = int(s["n"]), int(s["r"]), int(s["p"])
                sane = n >= 2 and r > 0 and 0 < p <= 4 and 128 * n * r <= MAX_SCRYPT_MEMORY
                if s.get("kdf") != "scrypt" or not sane:
                    raise KeyUnlockError(f"{where}: unsupported key derivation parameters")
                slots.append(
                    Slot(
                        int(s["slot"]),
                        _unb64(s["salt"], "salt"),
                        _unb64(s["nonce"], "nonce"),
                        _unb64(s["wrapped"], "wrapped key"),
                        n,
                        r,
                        p,
                        str(s.get("created", "")),
                    )
                )
        except KeyUnlockError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise KeyUnlockError(f"{where}: malformed key file") from exc
        if len(key_id) != 16 or not slots:
            raise KeyUnlockError(f"{where}: malformed key file")
        return cls(key_id, slots)

    def save(self, path: Path) -> None:
        """Write whole and durably, readable by its owner only; on any failure a
        ParbackupError naming the file: left as it was when the write failed (a full
        disk), in place but maybe not durable when only its folder's sync did (fileio.py)."""
        try:
            write_synced(path, self.to_json())
        except NotDurableError as exc:
            raise ParbackupError(
                f"{path}: the new key file is in place, but its folder could not be synced "
                f"({exc.strerror or exc}): it may not survive a power cut"
            ) from exc
        except OSError as exc:
            raise ParbackupError(
                f"{path}: the key file cannot be written ({exc.strerror or exc}); "
                "the key file there is unchanged"
            ) from exc

    @classmethod
    def load(cls, path: Path) -> KeyFile | None:
        """The key file at ``path``, or None when there is none (a FIFO under its name
        is refused, never waited on)."""
        try:
            with os.fdopen(open_regular(path), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyUnlockError(f"{path}: {exc.strerror or exc}") from exc
        return cls.from_json(data, str(path))


def unlock_any(copies: list[KeyFile], passphrase: bytes) -> tuple[KeyFile, bytes]:
    """(the copy ``passphrase`` opens, master key), from copies of one key file that may
    differ in their slots; the first copy's KeyUnlockError when it opens none."""
    first: KeyUnlockError | None = None
    for keyfile in copies:
        try:
            master, _slot = keyfile.unlock(passphrase)
        except KeyUnlockError as exc:
            first = first or exc
            continue
        return keyfile, master
    raise first or KeyUnlockError("no key file to unlock")


def key_path(catalog_path: str | Path) -> Path:
    """Where the key file of a catalog lives: beside it."""
    return Path(f"{catalog_path}.key")


def device_key_name(key_id: bytes) -> str:
    """Where a copy of the key file lies on a device."""
    return f"keys/{key_id.hex()}.json"


def _check_passphrase(passphrase: bytes) -> None:
    if not passphrase:
        raise UsageError("the passphrase is empty")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""``parbackup key list|add|remove``, and the passphrase options every command shares.

The key file lives beside a catalog file, or in the meta table of a catalog on a
server (engine/keystore.py). ``key add`` and ``key remove`` rewrite only that file and
its copies on the devices (``keys/<key id>.json``, replaced at once on every device the
catalog knows): no volume changes, because every record is sealed with keys derived
from the master key, which stays the same. A device that cannot be reached then (or a
tape) is named and keeps its old copy until its next backup (exit 3).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from parbackup.catalog import Catalog, default_catalog_path, is_catalog_url
from parbackup.catalog import open_catalog as open_catalog_at
from parbackup.cli.common import (
    catalog_option,
    emit_json,
    handle_errors,
    json_option,
    open_catalog,
    status_of,
)
from parbackup.cli.render import line
from parbackup.crypto.codec import CodecSpec
from parbackup.crypto.compress import AUTO, OFF, parse_compression
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.crypto.passphrase import PassphraseSource
from parbackup.crypto.sealedfile import key_id_of, open_file
from parbackup.engine.keystore import (
    KeyCopies,
    key_at,
    key_change_lock,
    key_place,
    refresh_key_copies,
    save_key_at,
)
from parbackup.errors import EXIT_WARNINGS, CatalogError, KeyUnlockError, UsageError

T = TypeVar("T")
ENCRYPTED_META = "encrypted_key_id"
"""The ``meta`` key where a catalog keeps the id of the key its sets are encrypted with
(``remember_key``): the key file beside it can go missing, this cannot without it."""


def password_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--password-file`` and ``--password-command`` (see crypto/passphrase.py)."""
    func = click.option(
        "--password-command",
        default=None,
        metavar="CMD",
        help="Run CMD (no shell) and take the passphrase from the first line it prints.",
    )(func)
    return click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Read the passphrase from the first line of this file. Else "
        "--password-command, $PARBACKUP_PASSWORD_FILE, $PARBACKUP_PASSWORD, or a prompt.",
    )(func)


def _prompt(text: str, confirm: bool) -> Callable[[], bytes] | None:
    if not sys.stdin.isatty():
        return None

    def ask() -> bytes:
        try:
            value = click.prompt(text, hide_input=True, confirmation_prompt=confirm, err=True)
        except click.exceptions.Abort:  # end of input (Ctrl-D) or Ctrl-C at the prompt
            raise UsageError("no passphrase was typed") from None
        return str(value).encode()

    return ask


def passphrase(file: str | None, command: str | None, *, new: bool = False) -> bytes:
    """The passphrase the user gave (a new one is asked twice on a terminal)."""
    text = "New passphrase" if new else "Passphrase"
    return PassphraseSource(file, command).get(_prompt(text, new))


def catalog_target(catalog_path: str | None) -> str:
    """The catalog the user named (a file path or a server URL), or the default one."""
    return catalog_path or default_catalog_path()


def load_key(catalog_path: str | None) -> KeyFile:
    """The catalog's key file; KeyUnlockError when the catalog has none."""
    target = catalog_target(catalog_path)
    keyfile = key_at(target)
    if keyfile is None:
        raise KeyUnlockError(
            f"{key_place(target)}: no key (the first 'backup --encrypt' creates one)"
        )
    return keyfile


def remember_key(catalog: Catalog, codec: CodecSpec | None) -> None:
    """Record in the catalog that its sets are encrypted, and with which key, so that a
    backup or restore that finds no key file (or another catalog's) beside it stops
    (``check_key``) instead of writing in the clear or with a second key."""
    if codec is None or not codec.encrypted:
        return
    if catalog.meta(ENCRYPTED_META) != codec.key_id.hex():  # written once, not every night
        catalog.set_meta(ENCRYPTED_META, codec.key_id.hex())


def check_key(target: str, keyfile: KeyFile | None) -> None:
    """KeyUnlockError when the catalog ``target`` names says its sets are encrypted
    (``remember_key``) and ``keyfile`` (the one found beside it) is missing or another
    key: naming where the right one lies. A catalog that cannot be opened here is left
    to the command, which says why."""
    if not is_catalog_url(target) and not os.path.isfile(target):
        return
    try:
        with open_catalog_at(target, create=False) as catalog:
            recorded = catalog.meta(ENCRYPTED_META)
    except CatalogError:
        return
    if recorded is None or (keyfile is not None and keyfile.key_hex == recorded):
        return
    copies = f"a copy lies on each of its devices as keys/{recorded}.json"
    if keyfile is None:
        raise KeyUnlockError(
            f"{key_place(target)}: missing, but the sets of {target} are encrypted (key "
            f"{recorded[:12]}): put the key file back ({copies}); nothing is written "
            "in the clear, nor with a new key"
        )
    raise KeyUnlockError(
        f"{key_place(target)} holds key {keyfile.key_hex[:12]}, but the sets of {target} "
        f"are encrypted with key {recorded[:12]}: put its own key file back ({copies})"
    )


def reader_codec(
    catalog_path: str | None, password_file: str | None, password_command: str | None
) -> CodecSpec | None:
    """The key for reading the catalog's sets: None when the catalog has no key, else
    unlocked with the user's passphrase (KeyUnlockError before anything is read)."""
    keyfile = key_at(catalog_target(catalog_path))
    check_key(catalog_target(catalog_path), keyfile)
    if keyfile is None:
        return None
    master, _slot = keyfile.unlock(passphrase(password_file, password_command))
    return CodecSpec(OFF, master, keyfile.key_id)


def backup_codec(
    catalog_path: str | None,
    encrypt: bool,
    compression: str | None,
    password_file: str | None,
    password_command: str | None,
) -> tuple[CodecSpec | None, bytes]:
    """How a new set's records are stored, and the key file to put on its devices.
    ``--encrypt`` creates the catalog's key on first use; once the catalog has a key
    every set is encrypted with it. Compression defaults to auto for an encrypted set
    and off otherwise."""
    target = catalog_target(catalog_path)
    keyfile = key_at(target, create=True)
    check_key(target, keyfile)
    master = b""
    if keyfile is not None:
        master, _slot = keyfile.unlock(passphrase(password_file, password_command))
    elif encrypt:
        keyfile, master = KeyFile.create(passphrase(password_file, password_command, new=True))
        save_key_at(target, keyfile)
    mode = (AUTO if master else OFF) if compression is None else parse_compression(compression)
    if not master and mode == OFF:
        return None, b""
    if keyfile is None or not master:
        return CodecSpec(mode), b""
    return CodecSpec(mode, master, keyfile.key_id), keyfile.to_json()


def _slots(keyfile: KeyFile) -> list[dict]:
    return [{"slot": s.slot, "kdf": "scrypt", "created": s.created} for s in keyfile.slots]


@click.group("key")
def key() -> None:
    """Manage the passphrases that open the encryption key of a catalog.

    \b
    Examples:
      parbackup key list
      parbackup key add --password-file old.txt --new-password-file new.txt
      parbackup key remove 1 --password-file new.txt
    """


@key.command("list")
@catalog_option
@json_option
@handle_errors
def key_list(catalog_path: str | None, as_json: bool) -> int:
    """List the passphrase slots of the key (no passphrase needed, nothing secret shown)."""
    keyfile = load_key(catalog_path)
    if as_json:
        emit_json({"status": "ok", "key_id": keyfile.key_hex, "slots": _slots(keyfile)})
    else:
        line(f"key {keyfile.key_hex}")
        for s in keyfile.slots:
            line(f"  slot {s.slot}  scrypt  created {s.created}")
    return 0


@key.command("add")
@catalog_option
@password_options
@click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the new passphrase from this file (else --new-password-command or a prompt).",
)
@click.option("--new-password-command", default=None, metavar="CMD")
@json_option
@handle_errors
def key_add(
    catalog_path: str | None,
    password_file: str | None,
    password_command: str | None,
    new_password_file: str | None,
    new_password_command: str | None,
    as_json: bool,
) -> int:
    """Add a passphrase: unlock with an existing one, wrap the key with a new one."""

    def add(keyfile: KeyFile, master: bytes, _opened: int) -> int:
        if not (new_password_file or new_password_command) and not sys.stdin.isatty():
            raise click.UsageError("give --new-password-file or --new-password-command")
        new = passphrase(new_password_file, new_password_command, new=True)
        return keyfile.add(master, new).slot

    keyfile, added, copies = _change_key(catalog_path, password_file, password_command, add)
    return _changed(keyfile, copies, as_json, {"added": added}, f"passphrase added as slot {added}")


@key.command("remove")
@click.argument("slot", type=int)
@catalog_option
@password_options
@json_option
@handle_errors
def key_remove(
    slot: int,
    catalog_path: str | None,
    password_file: str | None,
    password_command: str | None,
    as_json: bool,
) -> int:
    """Remove passphrase SLOT; the passphrase given must open another slot, one that
    stays (so the key is known to open after the removal: 'key add' first to replace
    the only passphrase)."""
    keyfile, _, copies = _change_key(
        catalog_path,
        password_file,
        password_command,
        lambda keyfile, _, opened: keyfile.remove(slot, opened=opened),
    )
    return _changed(keyfile, copies, as_json, {"removed": slot}, f"slot {slot} removed")


def _change_key(
    catalog_path: str | None,
    password_file: str | None,
    password_command: str | None,
    change: Callable[[KeyFile, bytes, int], T],
) -> tuple[KeyFile, T, KeyCopies]:
    """Under the key-change lock: unlock the catalog's key file with a passphrase it
    takes, ``change(keyfile, master key)``, then write the changed key file; the key
    file, what ``change`` returned, and how its copies on the devices fared (``change``
    is also told which slot the passphrase opened).

    The devices' copies first, the catalog's key last: a run killed half way leaves the
    catalog's key unchanged, so running it again changes every copy (the other way
    round, a rerun of ``remove`` found no such slot and the devices kept copies the
    removed passphrase opens)."""
    with key_change_lock(catalog_target(catalog_path)):
        keyfile = load_key(catalog_path)
        master, opened = keyfile.unlock(passphrase(password_file, password_command))
        done = change(keyfile, master, opened)
        copies = _refresh(catalog_path, keyfile)
        save_key_at(catalog_target(catalog_path), keyfile)
    return keyfile, done, copies


def _changed(keyfile: KeyFile, copies: KeyCopies, as_json: bool, fields: dict, text: str) -> int:
    """Say what changed (``fields`` in the JSON, ``text`` otherwise) and where the key
    file's copies could not be replaced; the exit code (warnings for those)."""
    code = EXIT_WARNINGS if copies.unreachable else 0
    if as_json:
        head = {"status": status_of(code), "key_id": keyfile.key_hex}
        emit_json({**head, **fields, "devices": copies.to_json()})
    else:
        line(f"key {keyfile.key_hex}: {text}")
        _tell(copies)
    return code


def _refresh(catalog_path: str | None, keyfile: KeyFile) -> KeyCopies:
    """Replace the key file's copies on the catalog's devices (none when the catalog
    itself does not exist yet: a key made before any backup)."""
    target = catalog_target(catalog_path)
    if not is_catalog_url(target) and not os.path.exists(target):
        return KeyCopies()
    with open_catalog(target, create=False) as catalog:
        return refresh_key_copies(catalog, keyfile)


def _tell(copies: KeyCopies) -> None:
    if copies.refreshed:
        line(f"the key file's copy replaced on {len(copies.refreshed)} device(s)")
    for device, why in sorted(copies.unreachable.items()):
        line(
            f"warning: {device}: its copy of the key file keeps the old passphrases"
            f" until its next backup ({why})",
            problem=True,
        )


@key.command("open-catalog")
@click.argument("sealed", type=click.Path(dir_okay=False, exists=True))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The key file to unlock (e.g. keys/<id>.json on the device); default: the catalog's.",
)
@catalog_option
@password_options
@handle_errors
def key_open_catalog(
    sealed: str,
    output: str,
    key_file: str | None,
    catalog_path: str | None,
    password_file: str | None,
    password_command: str | None,
) -> int:
    """Decrypt a sealed catalog copy (catalog/catalog.sqlite.sealed on a device) into
    OUTPUT, a catalog file that restore and the other commands can use (--catalog)."""
    if os.path.exists(output):
        raise UsageError(f"{output} exists; give a new file")
    keyfile = (
        KeyFile.from_json(Path(key_file).read_bytes(), key_file) if key_file else None
    ) or load_key(catalog_path)
    with open(sealed, "rb") as src:
        if key_id_of(src.read(64)) != keyfile.key_id:
            raise KeyUnlockError(f"{sealed} was sealed with another key than {keyfile.key_hex}")
        src.seek(0)
        master, _slot = keyfile.unlock(passphrase(password_file, password_command))
        part = output + ".part"
        try:
            with open(part, "wb") as dst:
                open_file(src, dst, master, sealed)
            os.replace(part, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
    keyfile.save(key_path(output))
    line(f"{output}: catalog opened (its key file beside it)")
    return 0

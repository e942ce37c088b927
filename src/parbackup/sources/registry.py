"""Source kind -> class, imported lazily so optional dependencies stay optional.

``spec_for(name)`` turns what the user typed (a path, ``-``, a URL) into a
``SourceSpec``; ``open_source(spec)`` builds the source in any process.
"""

from __future__ import annotations

import importlib
import os
import stat

from parbackup.devices.url import parse_url, redact
from parbackup.errors import SourceError, UsageError
from parbackup.sources.base import Source, SourceSpec

# kind: (module, class, pip extra that provides its dependencies or "")
REGISTRY: dict[str, tuple[str, str, str]] = {
    "tree": ("parbackup.sources.local", "LocalTree", ""),
    "blockdev": ("parbackup.sources.blockdev", "BlockDeviceSource", ""),
    "stdin": ("parbackup.sources.stdin", "StdinSource", ""),
    "sftp": ("parbackup.sources.sftp", "SftpTree", "sftp"),
    "s3": ("parbackup.sources.s3", "S3Prefix", "s3"),
}
REMOTE_KINDS = ("sftp", "s3")


def is_remote(name: str) -> bool:
    """True when ``name`` is a URL naming a remote tree (not a local path)."""
    return "://" in name and name.split("://", 1)[0].lower() != "file"


def source_class(kind: str) -> type[Source]:
    """The class of a source kind, with an install hint when its dependency is missing."""
    try:
        module_name, class_name, extra = REGISTRY[kind]
    except KeyError:
        raise UsageError(f"unknown source kind {kind!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'parbackup[{extra}]'" if extra else "reinstall parbackup"
        raise UsageError(
            f"sources of kind {kind!r} need a package that is not installed "
            f"({exc.name}); install it with: {hint}"
        ) from exc
    return getattr(module, class_name)


def spec_for(name: str, read_root: str = "") -> SourceSpec:
    """The spec of a source as the user named it; SourceError if a local one is missing."""
    if name == "-":
        return SourceSpec("stdin", "-", "-", display="-")
    if is_remote(name):
        url = parse_url(name)
        if url.scheme not in REMOTE_KINDS:
            known = ", ".join(f"{k}://" for k in REMOTE_KINDS)
            raise SourceError(f"cannot read sources of kind {url.scheme}:// (known: {known})")
        return SourceSpec(url.scheme, name, redact(name), display=redact(name))
    path = os.path.abspath(name.removeprefix("file://"))
    if not os.path.lexists(path):
        raise SourceError(f"source does not exist: {name}")
    kind = "blockdev" if _is_block_device(path) else "tree"
    return SourceSpec(kind, path, path, read_root if read_root != path else "", path)


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def open_source(spec: SourceSpec) -> Source:
    """The source a spec describes (not yet connected: kinds connect on first use)."""
    return source_class(spec.kind)(spec)

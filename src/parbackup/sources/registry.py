"""Source kind -> class, imported lazily so optional dependencies stay optional.

``spec_for(name)`` turns what the user typed (a path, ``-``, a URL) into a
``SourceSpec``; ``open_source(spec)`` builds the source in any process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import parse_qsl

from parbackup.devices.url import parse_url, redact
from parbackup.errors import SourceError
from parbackup.kinds import load_kind
from parbackup.sources.base import Source, SourceSpec
from parbackup.sources.blockdev import is_block_device
from parbackup.sources.hosted import HostedTree, on_host

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
    return load_kind(REGISTRY, kind, "source kind")


def exact_sources(specs: Sequence[SourceSpec]) -> frozenset[int]:
    """The numbers (positions in ``specs``) of the sources whose identity changes with
    their content (``Source.content_identity``): an incremental trusts it."""
    return frozenset(i for i, s in enumerate(specs) if source_class(s.kind).content_identity)


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
    host = _host_of(path)
    if host:  # PATH?host=NAME: a tree on a cluster host, perhaps not on this one
        path = path.rpartition("?")[0]
        return SourceSpec("tree", path, path, display=path, host=host)
    if not os.path.lexists(path):
        raise SourceError(f"source does not exist: {name}")
    kind = "blockdev" if is_block_device(path) else "tree"
    if not read_root and name.endswith("/") and os.path.islink(path) and os.path.isdir(path):
        # 'LINK/' names the directory the link points to (POSIX path resolution, as tar
        # and rsync read it): its tree is read there and recorded under LINK; without the
        # slash the link itself is the entry (it used to be, even with the slash)
        read_root = os.path.realpath(path)
    return SourceSpec(kind, path, path, read_root if read_root != path else "", path)


def _host_of(path: str) -> str:
    """The NAME of a path ending in ``?host=NAME`` (a path that exists as it is: "")."""
    rest, sep, query = path.rpartition("?")
    if not sep or os.path.lexists(path):
        return ""
    return dict(parse_qsl(query)).get("host", "") if rest else ""


def open_source(spec: SourceSpec) -> Source:
    """The source a spec describes (not yet connected: kinds connect on first use); a
    tree on another cluster host is read through its file server there."""
    if spec.via and not on_host(spec.host):
        return HostedTree(spec)
    return source_class(spec.kind)(spec)

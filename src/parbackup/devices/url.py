"""Parsing device URLs: scheme, location, query options, and a display form without secrets."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from parbackup.errors import UsageError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "p": 1000**5,
    "pb": 1000**5,
    "pib": 1024**5,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SECRET_KEYS = {"secret", "secret_key", "password", "token", "key", "access_key", "session_token"}


def parse_size(text: str) -> int:
    """Parse '400G', '1.5TiB', '512MB', '1000' into bytes (K/M/G/T are powers of 1000)."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (examples: 500M, 400G, 1.5TiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (powers of 1024: what ``parse_size`` reads as KiB, MiB...)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class DeviceURL:
    """A parsed device URL. ``display`` is safe to print and store: no secrets."""

    raw: str
    scheme: str
    host: str = ""
    port: int | None = None
    user: str = ""
    password: str = field(default="", repr=False)
    path: str = ""
    params: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def capacity(self) -> int | None:
        """``?capacity=SIZE`` if given."""
        value = self.params.get("capacity")
        return None if value is None else parse_size(value)

    @property
    def display(self) -> str:
        """The URL as given, minus passwords and secret query values."""
        return redact(self.raw)


def redact(url: str) -> str:
    """Hide the password part and secret-looking query values of a URL."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
    query = parts.query
    if query:
        pairs = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            pairs.append(f"{key}=***" if key.lower() in _SECRET_KEYS else f"{key}={value}")
        query = "&".join(pairs)
    out = f"{parts.scheme}://{netloc}{parts.path}"
    return out + (f"?{query}" if query else "")


def parse_url(text: str) -> DeviceURL:
    """Parse a device URL; a plain path means a directory device (``file``).

    A relative directory path (``backups/disk1``, ``file://backups/disk1``) is made
    absolute against the current directory here, so what is displayed and stored in the
    catalog names the same directory from anywhere.
    """
    if not text:
        raise UsageError("empty device URL")
    if "://" not in text:
        path, _, query = text.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        path = os.path.abspath(path)
        raw = path + (f"?{query}" if query else "")
        return DeviceURL(raw=raw, scheme="file", path=path, params=params)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file" and parts.hostname not in (None, "", "localhost"):
        # file://backups/disk1: the "host" is the first part of a relative path
        path = os.path.abspath(unquote(parts.netloc + parts.path))
        text = urlunsplit(("file", "", quote(path), parts.query, ""))
        parts = urlsplit(text)
    elif scheme == "file" and not parts.path.startswith("/"):
        raise UsageError(f"no directory in {redact(text)!r} (use file:///path or a plain path)")
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise UsageError(f"bad URL scheme in {redact(text)!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad port in {redact(text)!r}") from exc
    return DeviceURL(
        raw=text,
        scheme=scheme,
        host=parts.hostname or "",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        path=unquote(parts.path),
        params=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )

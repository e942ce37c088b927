"""Logging in to an SSH host and speaking SFTP to it: what the SFTP device
(devices/sftp.py) and the SFTP source (sources/sftp.py) share.

The usual SSH setup applies: ``~/.ssh/config`` (HostName, Port, User, IdentityFile,
UserKnownHostsFile, ProxyCommand), the agent and the default keys; ``?identity=PATH`` and
``?known_hosts=PATH`` override them, ``?timeout=SECONDS`` (default 30) bounds every
network wait. Host keys are always checked: an unknown host is an error unless
``PARBACKUP_ACCEPT_NEW_HOST_KEYS=1`` (the CLI's ``--accept-new-host-keys``), which adds
its key to the known-hosts file like OpenSSH's ``accept-new``; a changed key is always
refused. ``map_error`` turns what paramiko raises into device errors: transient when
the connection is lost, the SFTP status mapped otherwise.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket

import paramiko

from parbackup.devices.base import ACCEPT_NEW_HOST_KEYS_ENV
from parbackup.devices.url import DeviceURL
from parbackup.errors import (
    DeviceError,
    DeviceFullError,
    DeviceMissingError,
    TransientDeviceError,
)

_LOST = (paramiko.SSHException, EOFError, socket.error, ConnectionError, TimeoutError)
SFTP_ERRORS = (OSError, *_LOST)
"""What paramiko raises from an SFTP call; ``map_error`` turns each into a DeviceError."""


def accept_new_host_keys() -> bool:
    """True when unknown host keys may be learnt (``PARBACKUP_ACCEPT_NEW_HOST_KEYS``)."""
    return os.environ.get(ACCEPT_NEW_HOST_KEYS_ENV, "").lower() in ("1", "yes", "true", "on")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Learn an unknown host's key and append it to the known-hosts file (never a changed one)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        entry = paramiko.hostkeys.HostKeyEntry([hostname], key)
        with open(self.path, "a") as fh:
            fh.write(entry.to_line())


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        raise _UnknownHostKey(hostname, key)


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_name()


def timeout_of(url: DeviceURL) -> float:
    """``?timeout=SECONDS`` of an ``sftp://`` URL: the bound on every network wait."""
    return float(url.params.get("timeout", "30"))


def remote_path(url: DeviceURL) -> str:
    """The URL's path as the server takes it (``/~/dir`` is relative to the login directory)."""
    path = url.path or "/"
    if path.startswith("/~/") or path == "/~":
        path = path[3:] or "."
    return path


def _settings(url: DeviceURL) -> dict:
    """Connection settings: the URL first, then ~/.ssh/config, then defaults."""
    cfg: dict = {}
    config_path = os.path.expanduser("~/.ssh/config")
    if os.path.exists(config_path):
        cfg = paramiko.SSHConfig.from_path(config_path).lookup(url.host)
    identity = url.params.get("identity")
    known = url.params.get("known_hosts") or (cfg.get("userknownhostsfile") or "")
    return {
        "hostname": cfg.get("hostname", url.host),
        "port": url.port or int(cfg.get("port", 22)),
        "username": url.user or cfg.get("user") or getpass.getuser(),
        "key_filename": [os.path.expanduser(identity)]
        if identity
        else [os.path.expanduser(p) for p in cfg.get("identityfile", [])] or None,
        "known_hosts": os.path.expanduser(known.split()[0]) if known else "",
        "proxy": cfg.get("proxycommand"),
        "identity_only": bool(identity),
    }


def connect(url: DeviceURL, timeout: float) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    """Log in to the host of ``url`` and open an SFTP session (see the module docstring).

    The one place that reads ``~/.ssh/config``, ``?identity=``, ``?known_hosts=`` and
    checks host keys, for the device and for remote sources alike. Every failure is a
    DeviceError naming ``url.display`` (transient when the host cannot be reached).
    """
    s = _settings(url)
    client = paramiko.SSHClient()
    known = s["known_hosts"] or os.path.expanduser("~/.ssh/known_hosts")
    if s["known_hosts"]:
        if os.path.exists(known):
            client.load_host_keys(known)
    else:
        client.load_system_host_keys()
    client.set_missing_host_key_policy(_AcceptNew(known) if accept_new_host_keys() else _Refuse())
    where = url.display
    try:
        client.connect(
            s["hostname"],
            port=s["port"],
            username=s["username"],
            password=url.password or None,  # discouraged, but redacted everywhere
            key_filename=s["key_filename"],
            look_for_keys=not s["identity_only"],
            allow_agent=True,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            sock=paramiko.ProxyCommand(s["proxy"]) if s["proxy"] else None,
        )
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
    except _UnknownHostKey as exc:
        client.close()
        raise DeviceError(
            f"{where}: unknown host key for {exc.hostname} ({exc.key.get_name()} "
            f"{_fingerprint(exc.key)}); check it and add it to {known}, or pass "
            "--accept-new-host-keys to trust it on first use"
        ) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise DeviceError(
            f"{where}: the host key of {exc.hostname} CHANGED (now {_fingerprint(exc.key)});"
            f" refusing to connect (see {known})"
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise DeviceError(f"{where}: SSH authentication failed ({exc})") from exc
    except _LOST as exc:
        client.close()
        raise TransientDeviceError(f"{where}: cannot connect: {exc}") from exc
    return client, sftp


def read_range(fh: paramiko.SFTPFile, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of an open remote file, in pipelined requests (readv).

    On a closed channel it raises EOFError at once: readv sends from a thread of its own,
    which would die there with a traceback on the user's terminal.
    """
    channel = fh.sftp.get_channel()
    if channel is None or channel.closed:
        raise EOFError("the SFTP channel is closed")
    return b"".join(fh.readv([(offset, length)]))


def _alive(client: paramiko.SSHClient | None) -> bool:
    transport = client.get_transport() if client is not None else None
    return bool(transport and transport.is_active())


def map_error(exc: BaseException, where: str, ssh: paramiko.SSHClient | None) -> DeviceError:
    """A foreign error of an SFTP call (one of SFTP_ERRORS) as a device error.

    Transient when the connection ``ssh`` is lost (the caller then drops it and connects
    again); otherwise the SFTP status mapped onto a permanent error.
    """
    if isinstance(exc, OSError) and (exc.errno is not None or _alive(ssh)):
        return map_status(exc, where)
    return TransientDeviceError(f"{where}: connection lost ({exc})")


def map_status(exc: OSError, what: str) -> DeviceError:
    """An SFTP status (raised by paramiko as OSError) as a device error."""
    if exc.errno == errno.ENOENT or isinstance(exc, FileNotFoundError):
        return DeviceMissingError(f"{what}: no such file")
    if exc.errno == errno.EACCES:
        return DeviceError(f"{what}: permission denied")
    if isinstance(exc, TimeoutError):  # the channel's timeout: paramiko gives no text
        return DeviceError(f"{what}: no answer within the timeout (?timeout=, default 30 s)")
    text = str(exc.strerror or exc) or type(exc).__name__
    if "space" in text.lower() or "quota" in text.lower():
        return DeviceFullError(f"{what}: {text}")
    return DeviceError(f"{what}: {text}")

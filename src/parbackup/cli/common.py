"""What every command shares: catalog option, --json, error handling, exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from parbackup.catalog import Catalog, default_catalog_path
from parbackup.engine.devices import accept_new_host_keys
from parbackup.errors import EXIT_FAILED, ParbackupError

catalog_option = click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="PARBACKUP_CATALOG",
    help="Catalog file (SQLite). Default: $PARBACKUP_CATALOG, else catalog.sqlite in "
    "your data directory (~/.local/share/parbackup).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout and nothing else."
)


def _accept_new(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        accept_new_host_keys()


accept_new_host_keys_option = click.option(
    "--accept-new-host-keys",
    is_flag=True,
    expose_value=False,
    callback=_accept_new,
    envvar="PARBACKUP_ACCEPT_NEW_HOST_KEYS",
    help="Trust the host key of an SFTP host seen for the first time and add it to the "
    "known-hosts file (like OpenSSH accept-new). A changed host key is always refused.",
)


def open_catalog(path: str | None, *, create: bool) -> Catalog:
    """The catalog at ``path`` (or the default one)."""
    return Catalog(path or default_catalog_path(), create=create)


def emit_json(doc: Any) -> None:
    """Write the command's one JSON document to stdout."""
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def handle_errors(func: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body; turn ParbackupError into a message and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        as_json = kwargs.get("as_json", False)
        try:
            code = func(*args, **kwargs) or 0
        except ParbackupError as exc:
            if as_json:
                emit_json({"status": "failed", "error": str(exc)})
            else:
                click.echo(f"parbackup: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("parbackup: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else EXIT_FAILED)

    return wrapper


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

"""Named profiles: a command's options read from a TOML file (``--profile NAME``).

The file is ``--config FILE``, else ``$PARBACKUP_CONFIG``, else
``$XDG_CONFIG_HOME/parbackup/config.toml`` (``~/.config/parbackup/config.toml``)::

    [profiles.home]
    sources = ["/home", "/etc"]
    devices = ["/mnt/disk1", "/mnt/disk2", "sftp://backup@nas/srv/pb"]
    catalog = "/var/lib/parbackup/home.sqlite"
    strategy = "fill"
    exclude = ["**/.cache/", "*.tmp"]
    exclude-caches = true

    [profiles.home.retention]
    keep-daily = 7
    keep-weekly = 4

A key is a command's long option name (``exclude-caches``, ``keep-daily``; ``_`` works
for ``-``), or ``sources`` / ``devices`` / ``excludes``. Sub-tables (``retention``,
``options``) are read as if their keys stood in the profile itself. Each command takes
the keys it knows and leaves the others to the commands that do (``keep-daily`` is
forget's, ``strategy`` backup's); a key no command knows is an error. With a profile,
``latest``, ``latest~N`` and dates name the sets of the profile's sources
(``scoped_set``), so profiles sharing a catalog never pick each other's sets.

Precedence, highest first: the command line, then environment variables
(``PARBACKUP_CATALOG``, ...), then the profile, then the built-in defaults. It is click's
own order: the profile fills the command's ``default_map``.

Secrets never go in the file: a key naming a password or secret is refused; name a
command that prints it instead (``password-command``, where the command has one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from parbackup.cli.common import open_catalog
from parbackup.errors import UsageError

SUB_TABLES = ("retention", "options")
ALIASES = {"devices": "device", "excludes": "exclude", "exclude-files": "exclude-file"}
SECRET_WORDS = ("password", "passphrase", "secret", "token")
ALLOWED_SECRET_KEYS = ("password-command", "password-file")
"""Where a secret comes from, not the secret: allowed (for the commands that take them)."""


def config_path(given: str | None) -> str:
    """The configuration file to read: ``given``, else the XDG default."""
    if given:
        return os.path.abspath(os.path.expanduser(given))
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "parbackup", "config.toml")


def _key(raw: str) -> str:
    key = raw.replace("_", "-")
    return ALIASES.get(key, key)


def read_profile(path: str, name: str) -> dict[str, tuple[str, Any]]:
    """The keys of profile ``name`` in ``path`` (sub-tables flattened, keys normalised),
    each with where it was written and its value; UsageError naming the file (and key)
    when it cannot be used."""
    import tomllib  # only with --profile: a plain run never parses TOML

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: no configuration file (needed by --profile {name})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict):
        raise UsageError(f"{path}: no [profiles.NAME] table")
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise UsageError(f"{path}: no profile {name!r} (profiles: {known})")
    table = profiles[name]
    if not isinstance(table, dict):
        raise UsageError(f"{path}: profiles.{name}: must be a table")
    flat: dict[str, tuple[str, Any]] = {}  # key -> (where it was written, value)
    for raw, value in table.items():
        where = f"profiles.{name}.{raw}"
        if raw in SUB_TABLES:
            if not isinstance(value, dict):
                raise UsageError(f"{path}: {where}: must be a table")
            items = [(f"{where}.{k}", k, v) for k, v in value.items()]
        else:
            items = [(where, raw, value)]
        for at, k, v in items:
            key = _key(k)
            if isinstance(v, dict):
                raise UsageError(f"{path}: {at}: unexpected table")
            if any(w in key for w in SECRET_WORDS) and key not in ALLOWED_SECRET_KEYS:
                raise UsageError(
                    f"{path}: {at}: secrets never go in the configuration file; "
                    "name a command that prints it (password-command) or a file (password-file)"
                )
            if key in flat:
                raise UsageError(f"{path}: {at}: given twice (also as {flat[key][0]})")
            flat[key] = (at, v)
    return flat


def _names(param: click.Parameter) -> list[str]:
    """The keys a parameter answers to: its long option names and its name."""
    names = [o[2:] for o in param.opts + param.secondary_opts if o.startswith("--")]
    return [*names, _key(param.name or "")]


def _known_keys(ctx: click.Context) -> set[str]:
    """Every key some profile-aware command of the program takes."""
    keys: set[str] = set()
    root = ctx.find_root()
    group = root.command
    if isinstance(group, click.Group):
        for name in group.list_commands(root):
            cmd = group.get_command(root, name)
            if cmd is not None and any(p.name == "profile" for p in cmd.params):
                keys.update(k for p in cmd.params for k in _names(p))
    keys.update(k for p in ctx.command.params for k in _names(p))
    return keys - {"profile", "config", "json", "help"}


def _value(param: click.Parameter, value: Any) -> Any:
    """A TOML value in the shape the parameter takes (one string for a repeatable
    option becomes a list of one; '~' is expanded)."""
    many = param.multiple or param.nargs == -1
    if many and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        return [os.path.expanduser(v) if isinstance(v, str) else v for v in value]
    return os.path.expanduser(value) if isinstance(value, str) else value


def _check_shape(param: click.Parameter, raw: Any, where: str) -> None:
    """UsageError (naming ``where``) for a TOML value click would bend rather than
    refuse: a list for a one-value option (an internal error before), true or false for
    anything but a flag, a fraction for a whole number (``keep-daily = true`` was taken
    as 1, ``7.5`` as 7: forget then deleted what was meant to be kept)."""
    flag = isinstance(param, click.Option) and param.is_flag
    if flag and not isinstance(raw, bool):
        raise UsageError(f"{where}: must be true or false")
    if isinstance(raw, list) and not (param.multiple or param.nargs == -1):
        raise UsageError(f"{where}: takes one value, not a list")
    for v in raw if isinstance(raw, list) else [raw]:
        if isinstance(v, list):
            raise UsageError(f"{where}: takes one value, not a list")
        if isinstance(v, bool) and not flag:
            raise UsageError(f"{where}: give a value, not true or false")
        if isinstance(v, float) and isinstance(param.type, click.types.IntParamType):
            raise UsageError(f"{where}: give a whole number, not {v}")


def apply_profile(ctx: click.Context) -> None:
    """Fill the command's ``default_map`` from the profile named on its command line."""
    if "parbackup.profile" not in ctx.meta or "parbackup.config" not in ctx.meta:
        return  # wait for both (eager options run in command-line order)
    name = ctx.meta["parbackup.profile"]
    if not name:
        return
    path = config_path(ctx.meta.get("parbackup.config"))
    profile = read_profile(path, name)
    known = _known_keys(ctx)
    defaults: dict[str, Any] = {}
    for key, (at, raw) in profile.items():
        if key not in known:
            raise UsageError(f"{path}: {at}: unknown key")
        param = next((p for p in ctx.command.params if key in _names(p)), None)
        if param is None or param.name is None:
            continue  # another command's key (keep-daily is forget's)
        _check_shape(param, raw, f"{path}: {at}")
        value = _value(param, raw)
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise UsageError(f"{path}: {at}: {exc.format_message()}") from None
        defaults[param.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    if "sources" in profile:
        from parbackup.engine.forget import source_names  # retention's code: a profile's only

        raw = _value(click.Argument(["sources"], nargs=-1), profile["sources"][1])
        ctx.meta["parbackup.sources"] = source_names([str(v) for v in raw])


def profile_sources() -> list[str] | None:
    """The active profile's sources (sorted, as sets record them); None without one."""
    ctx = click.get_current_context(silent=True)
    return (ctx.meta.get("parbackup.sources") if ctx is not None else None) or None


def scoped_set(catalog_path: str | None, ref: str) -> str:
    """``ref`` as the active profile means it: ``latest``, ``latest~N`` and a date name
    the newest sets of the profile's sources (not another profile's in the same
    catalog); the full id of that set, or ``ref`` unchanged without a profile."""
    sources = profile_sources()
    if not sources:
        return ref
    with open_catalog(catalog_path, create=False) as catalog:
        return catalog.resolve_set(ref, sources).id


def _remember(key: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        ctx.meta[key] = value
        apply_profile(ctx)  # does its work once both --config and --profile are known

    return callback


def profile_options(func: Callable) -> Callable:
    """``--profile NAME`` and ``--config FILE`` (both read before every other option)."""
    func = _eager_option(
        "--config",
        "FILE",
        "parbackup.config",
        "Configuration file of the profiles. Default: $PARBACKUP_CONFIG, else "
        "$XDG_CONFIG_HOME/parbackup/config.toml.",
        envvar="PARBACKUP_CONFIG",
    )(func)
    return _eager_option(
        "--profile",
        "NAME",
        "parbackup.profile",
        "Take options from [profiles.NAME] of the configuration file. The command "
        "line wins over the environment, which wins over the profile.",
    )(func)


def _eager_option(name: str, metavar: str, key: str, help: str, **more: Any) -> Callable:
    """An option read before every other one, its value kept in ``ctx.meta[key]``."""
    return click.option(
        name,
        metavar=metavar,
        default=None,
        is_eager=True,
        expose_value=False,
        callback=_remember(key),
        help=help,
        **more,
    )

"""Lazy registries of kinds (devices, sources): a name -> its class, imported on first
use so optional dependencies stay optional, with an install hint when one is missing.

A registry maps a kind to ``(module, class name, pip extra or "")`` (fsspec's
``registry.py`` is the model). Shared by ``devices.registry`` and ``sources.registry``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from parbackup.errors import UsageError

Registry = Mapping[str, tuple[str, str, str]]


def load_kind(registry: Registry, kind: str, what: str) -> type:
    """The class registered for ``kind``; UsageError naming ``what`` ("device kind",
    "source kind") when it is unknown or its package is not installed."""
    try:
        module_name, class_name, extra = registry[kind]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise UsageError(f"unknown {what} {kind!r} (known: {known})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'parbackup[{extra}]'" if extra else "reinstall parbackup"
        raise UsageError(
            f"{what} {kind!r} needs a package that is not installed ({exc.name}); "
            f"install it with: {hint}"
        ) from exc
    return getattr(module, class_name)

"""Which catalog backend a name means: a ``postgresql://`` URL or a SQLite file path.

The PostgreSQL backend (and psycopg, about 0.1 s to import) is loaded only when a URL
names it, as the device and source registries load their kinds: a command on a SQLite
catalog never pays for it.
"""

from __future__ import annotations

import importlib

from parbackup.catalog.store import Catalog

SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: str) -> bool:
    """True when ``target`` names a PostgreSQL catalog (``postgresql://…``)."""
    return "://" in target and target.split("://", 1)[0].lower() in SCHEMES


def open_catalog(target: str, *, create: bool = True) -> Catalog:
    """The catalog ``target`` names: on a PostgreSQL server for a ``postgresql://`` (or
    ``postgres://``) URL, else the SQLite file at that path. ``create``: make it (and its
    tables) if it does not exist yet; without it, a missing catalog is a CatalogError."""
    if is_postgres_url(target):
        postgres = importlib.import_module("parbackup.catalog.postgres")
        return postgres.PostgresCatalog(target, create=create)
    return Catalog(target, create=create)


def is_catalog_url(target: str) -> bool:
    """True when ``target`` names a catalog on a server rather than a local file."""
    return is_postgres_url(target)

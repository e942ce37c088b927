"""Which catalog backend a name means: a ``postgresql://`` URL or a SQLite file path."""

from __future__ import annotations

from parbackup.catalog.postgres import PostgresCatalog, is_postgres_url
from parbackup.catalog.store import Catalog


def open_catalog(target: str, *, create: bool = True) -> Catalog:
    """The catalog ``target`` names: on a PostgreSQL server for a ``postgresql://`` (or
    ``postgres://``) URL, else the SQLite file at that path. ``create``: make it (and its
    tables) if it does not exist yet; without it, a missing catalog is a CatalogError."""
    if is_postgres_url(target):
        return PostgresCatalog(target, create=create)
    return Catalog(target, create=create)


def is_catalog_url(target: str) -> bool:
    """True when ``target`` names a catalog on a server rather than a local file."""
    return is_postgres_url(target)

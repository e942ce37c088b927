"""The catalog: backup sets, their files, where every record lies, and which sets live.

``store`` is the SQLite catalog (the only module that imports sqlite3) and the contract
of every backend, ``postgres`` the catalog on a PostgreSQL server shared by many hosts
(the only module that imports psycopg), ``backend`` picks one from what the user named
(``open_catalog``), ``runlock`` the one-backup-per-catalog lock of a SQLite file.
"""

from parbackup.catalog.backend import is_catalog_url, open_catalog
from parbackup.catalog.filerows import CatalogFile
from parbackup.catalog.store import (
    Catalog,
    SetInfo,
    default_catalog_path,
)

__all__ = [
    "Catalog",
    "CatalogFile",
    "SetInfo",
    "default_catalog_path",
    "is_catalog_url",
    "open_catalog",
]

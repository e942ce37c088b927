"""The catalog: backup sets, their files, where every record lies, and which sets live.

``store`` is the SQLite catalog (the only module that imports sqlite3), ``runlock`` the
one-backup-per-catalog lock.
"""

from parbackup.catalog.store import (
    Catalog,
    CatalogFile,
    SetInfo,
    default_catalog_path,
)

__all__ = ["Catalog", "CatalogFile", "SetInfo", "default_catalog_path"]

"""``--cluster ADDRESS``: run a command's movers or readers on a Dask cluster (C2).

Without it nothing changes and Dask is never imported (parbackup/cluster.py imports it
only when a cluster is asked for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from parbackup.cli.common import open_catalog_to_read
from parbackup.cli.render import ProgressView, progress_view

if TYPE_CHECKING:
    from parbackup.catalog import Catalog
    from parbackup.cluster import DaskExecutor

cluster_address_option = click.option(
    "--cluster",
    "cluster",
    metavar="ADDRESS",
    default="",
    envvar="PARBACKUP_CLUSTER",
    help="Run the movers (readers for restore/verify) as tasks on the Dask cluster whose "
    "scheduler is at ADDRESS (tcp://HOST:PORT; or $PARBACKUP_CLUSTER). A device with "
    "?host=NAME runs on the worker NAME; others are spread over the workers. A source "
    "PATH?host=NAME is scanned and read on NAME. Needs parbackup[cluster]; see "
    "docs/CLUSTER.md.",
)
cluster_listen_option = click.option(
    "--cluster-listen",
    "cluster_listen",
    metavar="HOST[:PORT]",
    default="",
    envvar="PARBACKUP_CLUSTER_LISTEN",
    help="With --cluster: the address the workers call this program back on (default: "
    "this machine's address toward the scheduler, any free port).",
)


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Both cluster options on a command (``cluster``, ``cluster_listen`` arguments)."""
    return cluster_address_option(cluster_listen_option(func))


@contextlib.contextmanager
def cluster_executor(address: str, listen: str = "") -> Iterator[DaskExecutor | None]:
    """parbackup.cluster's executor for ``address`` for the duration; None (local
    processes) when empty, without importing that module and its readback and host-scan
    pieces (~7 ms of CPU at the start of every local backup, restore and verify)."""
    if not address:
        yield None
        return
    from parbackup.cluster import cluster_executor as on_cluster

    with on_cluster(address, listen) as executor:
        yield executor


@contextlib.contextmanager
def reading(
    catalog_path: str | None, cluster: str, cluster_listen: str, show_progress: bool
) -> Iterator[tuple[DaskExecutor | None, Catalog, ProgressView]]:
    """What restore and verify read a set with: the executor of ``--cluster`` (None: local
    readers), the catalog under its readers' lock, and a progress view."""
    with (
        cluster_executor(cluster, cluster_listen) as executor,
        open_catalog_to_read(catalog_path) as catalog,
        progress_view(show_progress) as view,
    ):
        yield executor, catalog, view

"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def client():
    """A Dask client on a real LocalCluster of 2 worker processes (one thread each), one per test module."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()

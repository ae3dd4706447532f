"""Fixtures shared by the agent and end-to-end tests: the 3-node cluster of tools/rabbitcluster."""

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="session")
def cluster_session():
    """tools/rabbitcluster's 3 nodes: started when none runs (and then stopped at the end)."""
    cluster = Cluster()
    started = not any(node.up for node in cluster.nodes())
    if not cluster.all_up():
        cluster.start()
    yield cluster
    if started:
        cluster.stop()


@pytest.fixture
def cluster(cluster_session):
    """The cluster with every node up, before and after the test (a test may kill nodes)."""
    cluster_session.revive_all()
    yield cluster_session
    cluster_session.revive_all()

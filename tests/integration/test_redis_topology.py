"""The Redis topologies of tests/integration/redis_topology.py, on their own: a Sentinel
failover keeps a replicated key; a cluster of six nodes forms, and promotes a replica when its
primary is killed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
from redis.cluster import ClusterNode as ClientNode
from redis.cluster import RedisCluster

from tests.integration.redis_topology import RedisClusterProcs, SentinelTopology


@pytest.fixture
async def sentinels() -> AsyncIterator[SentinelTopology]:
    topology = SentinelTopology(sentinel_password="sentinel-secret")
    try:
        await topology.start()
        yield topology
    finally:
        topology.cleanup()


async def test_a_sentinel_failover_promotes_the_replica_with_its_data(
    sentinels: SentinelTopology,
) -> None:
    old = sentinels.primary
    [replica] = sentinels.replicas
    client = old.client()
    client.set("kept", "yes")
    client.close()
    await sentinels.in_sync()
    new = await sentinels.kill_primary()
    assert new is replica and not old.running
    promoted = new.client()
    try:
        assert promoted.get("kept") == "yes"
        assert promoted.set("after", "1")  # a primary: it takes writes
    finally:
        promoted.close()
    assert all(s.master_port() == new.port for s in sentinels.sentinels)


async def test_a_cluster_forms_and_promotes_a_replica_of_a_killed_primary(
    cluster: RedisClusterProcs,
) -> None:
    assert len(cluster.primaries()) == 3
    client = RedisCluster(startup_nodes=[ClientNode("127.0.0.1", n.port) for n in cluster.nodes],
                          decode_responses=True)
    try:
        for i in range(20):
            client.set(f"k{i}", str(i))
    finally:
        client.close()
    await cluster.caught_up()  # replication is asynchronous: kill only once it has them
    killed, promoted = await cluster.kill_primary()
    assert not killed.running and promoted.running
    assert len(cluster.primaries()) == 3 and promoted in cluster.primaries()
    client = RedisCluster(startup_nodes=[ClientNode("127.0.0.1", p)
                                         for p in (n.port for n in cluster.nodes if n.running)],
                          decode_responses=True)
    try:
        assert [client.get(f"k{i}") for i in range(20)] == [str(i) for i in range(20)]
    except redis.RedisError as exc:
        pytest.fail(f"the cluster lost keys after the failover: {exc}")
    finally:
        client.close()

"""The bot on a six-node Redis Cluster (REDIS_MODE=cluster): threads on every shard
answered in their sessions, a Stop taken in by one replica stopping the turn another runs,
the operator's commands reading every shard; and one cluster primary killed with -9 under
load (tests/integration/failover_load.py): with REDIS_MIN_REPLICAS=1 every acked question
is answered exactly once; without, what was lost or answered twice is counted and reported
(`lost=` on stdout and the test's `record_property`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config import Settings
from bot.store.connect import redis_client, slot_primaries
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration import slack_user
from tests.integration.failover_load import cluster_failover, failover_under_load
from tests.integration.harness import BotProcess
from tests.integration.redis_topology import RedisClusterProcs
from tests.integration.slack_user import answer_in, history, say, wait_replies
from tests.integration.test_cli import cli_env, run_cli
from tests.integration.test_real_redis import any_redis_tests_of
from tests.unit import test_installations
from tests.waiting import eventually

# ---- Redis Cluster ------------------------------------------------------------------------


def _cluster_settings(cluster: RedisClusterProcs) -> dict[str, str]:
    return {"redis_mode": "cluster", "redis_url": f"redis://{cluster.startup_nodes[0]}/0"}


async def test_the_bot_runs_on_a_redis_cluster_and_a_stop_crosses_replicas(
    slack: FakeSlack, adk: AdkServer, prefix: str, cluster: RedisClusterProcs
) -> None:
    hold = Path(tempfile.mkdtemp(prefix="cluster-stop-")) / "never"
    first = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster))
    second = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster))
    await first.start()
    try:
        # Threads on every shard: mentions and follow-ups answered in their sessions.
        roots = [await say(slack, first, user="U1", text=f"thread {i}", mention=True)
                 for i in range(12)]
        for i, root in enumerate(roots):
            await answer_in(slack, "C1", root, f"said=Alice: thread {i}")
        await say(slack, first, user="U2", text="and a follow-up", thread_ts=roots[0])
        answers = await wait_replies(slack, "C1", roots[0], 2, timeout=30)
        assert "said=Bob: and a follow-up" in answers[1]
        assert slack_user.field(answers[1], "turn") == "2"
        assert "Alice: thread 0" in history(answers[1])

        # A turn held on the first replica is stopped by a "stop" the second one takes in.
        held = await say(slack, first, user="U1", text=f"wait hold={hold}", mention=True)
        await slack.wait_for_calls("assistant.threads.setStatus", 1, timeout=30,
                                   thread_ts=held)
        await second.start()
        await say(slack, second, user="U1", text="stop", thread_ts=held)
        await answer_in(slack, "C1", held, "Stopped")
        await first.wait_idle()

        # The operator's commands read the threads index of every shard on the cluster.
        env = cli_env(slack, adk, prefix, **_cluster_settings(cluster))
        code, out, err = await run_cli("sessions", "list", env=env)
        assert code == 0, out + err
        assert out.splitlines()[0] == "13 threads, newest first"
        code, out, err = await run_cli("doctor", "--json", env=env)
        [check] = [c for c in json.loads(out)["checks"] if c["name"] == "Redis"]
        # These cluster nodes keep nothing on disk: doctor says so.
        assert check["status"] == "warning", check
        assert check["summary"].endswith(", 13 thread(s) indexed; persistence is off"), check
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("durable", [True, False], ids=["min_replicas_1", "min_replicas_0"])
async def test_a_cluster_primary_killed_under_load(
    slack: FakeSlack, adk: AdkServer, prefix: str, cluster: RedisClusterProcs, durable: bool,
    record_property: Callable[[str, object], None],
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster),
                     redis_min_replicas="1" if durable else "0")
    await bot.start()
    try:
        await failover_under_load(
            bot, slack, during=lambda: cluster_failover(cluster), durable=durable,
            name=f"cluster_{'durable' if durable else 'plain'}",
            record_property=record_property)
        await eventually(lambda: bot.proc is not None and bot.proc.poll() is None)
    finally:
        await bot.close()


async def test_the_installation_store_runs_on_a_cluster(cluster: RedisClusterProcs,
                                                        prefix: str) -> None:
    """The installation and OAuth state stores' tests (tests/unit/test_installations.py),
    each on the cluster: every multi-key write of theirs stays in one slot."""
    client = redis_client(Settings(_env_file=None,  # type: ignore[call-arg]
                                   **_cluster_settings(cluster)))
    try:
        tests = any_redis_tests_of(test_installations)
        assert len(tests) >= 8
        for n, (name, test) in enumerate(sorted(tests.items())):
            await test(any_redis=client, prefix=f"{prefix}-{n}")  # type: ignore[operator]
            print("passed on the cluster:", name)
    finally:
        await client.aclose()


async def test_the_primaries_clients_follow_a_failover_and_are_all_closed(
    cluster: RedisClusterProcs, prefix: str
) -> None:
    """Durable acks on a cluster run the intake script and its WAIT on the key's primary
    (SlotPrimaries): after a failover the new primary gets a client of its own, and
    closing them closes both."""
    settings = Settings(_env_file=None, redis_min_replicas=1,  # type: ignore[call-arg]
                        **_cluster_settings(cluster))
    client = redis_client(settings)
    primaries = slot_primaries(settings, client)
    assert primaries is not None
    key = f"{prefix}:{{slot}}:probe"
    try:
        await client.set(key, "1")
        first = primaries.client_for(key)
        assert await first.ping()
        [victim] = [n for n in cluster.primaries()
                    if n.port == int(client.get_node_from_key(key).port)]  # type: ignore[union-attr]
        _killed, promoted = await cluster.kill_primary(victim)

        async def moved() -> bool:
            try:
                await client.set(key, "2")  # the cluster client learns the new slot map
            except Exception:
                return False
            node = client.get_node_from_key(key)  # type: ignore[attr-defined]
            return node is not None and int(node.port) == promoted.port

        await eventually(moved, timeout=30)
        second = primaries.client_for(key)
        assert second is not first and await second.ping()
        assert await second.get(key) == "2"
    finally:
        await primaries.aclose()
        await client.aclose()
    # Both clients closed: no connection of theirs is left open.
    for closed in (first, second):
        pool = closed.connection_pool
        connections = [*pool._available_connections, *pool._in_use_connections]
        assert connections and not any(c.is_connected for c in connections)

"""Redis Sentinel and durable acks with real processes: `python -m bot serve` on a primary,
a replica and three Sentinels of the test's own (tests/integration/redis_topology.py).

- The primary is killed (-9); the Sentinels promote the replica; the same bot process, not
  restarted, answers a new mention and a follow-up in a thread from before the failover.
- With REDIS_MIN_REPLICAS=1 an event is acked once the replica has it; while the replica is
  frozen (SIGSTOP: it confirms nothing) the HTTP intake answers 503 within about the
  timeout (Socket Mode: the envelope is not acked), and Slack's redelivery once the
  replica is back is acked and answered once.
- `python -m bot doctor` asks every Sentinel for the primary."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.store.keys import Keys
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.redis_server import RedisServer
from tests.integration.redis_topology import QUICK_SYNC, SentinelTopology
from tests.integration.slack_user import field, replies, say, wait_replies
from tests.integration.test_cli import cli_env, run_cli
from tests.waiting import eventually

REPLICA_TIMEOUT_MS = 300


@pytest.fixture
async def replicated() -> AsyncIterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica of it (no Sentinels)."""
    primary = RedisServer(persistent=False, extra_args=QUICK_SYNC)
    replica: RedisServer | None = None
    try:
        primary.start()
        replica = RedisServer(persistent=False, extra_args=[
            *QUICK_SYNC, "--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        await eventually(lambda: linked(replica), timeout=15, interval=0.05,
                         what="the replica did not sync")
        yield primary, replica
    finally:
        if replica is not None:
            replica.cleanup()
        primary.cleanup()


def linked(replica: RedisServer | None) -> bool:
    assert replica is not None
    client = replica.client()
    try:
        return client.info("replication").get("master_link_status") == "up"
    finally:
        client.close()


def mention(slack: FakeSlack, text: str, *, thread_ts: str | None = None,
            user: str = "U1") -> dict[str, Any]:
    """A mention stored in the fake Slack, as the app_mention event Slack sends for it."""
    text = f"<@{slack.bot_user_id}> {text}"
    ts = slack.add_message("C1", user=user, text=text, thread_ts=thread_ts)
    return ev.envelope(ev.app_mention(channel="C1", user=user, text=text, ts=ts,
                                      thread_ts=thread_ts))


async def delivered(bot: BotProcess, payload: dict[str, Any]) -> httpx.Response:
    """Slack's delivery: the event, then its redeliveries (retry 1 to 3) while the bot
    answers 5xx. The bot must ack one of them."""
    response = await bot.send(payload)
    for retry in range(1, 4):
        if response.status_code == 200:
            break
        response = await bot.send(payload, retry_num=retry)
    assert response.status_code == 200, response.text
    return response


async def test_the_bot_follows_a_sentinel_failover_without_a_restart(
    slack: FakeSlack, adk: AdkServer, prefix: str, sentinels: SentinelTopology
) -> None:
    # REDIS_URL's host and port are not used in Sentinel mode (only its db and credentials):
    # the old primary's address, which is dead after the failover.
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=sentinels.primary.url,
                     **sentinels.bot_settings())
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="before the failover", mention=True)
        [first] = await wait_replies(slack, "C1", root, 1, timeout=20)
        assert "said=Alice: before the failover" in first
        await bot.wait_idle()
        await sentinels.in_sync()  # the thread's mapping is on the replica
        assert bot.proc is not None
        pid = bot.proc.pid

        new_primary = await sentinels.kill_primary()

        payload = mention(slack, "after the failover")
        await delivered(bot, payload)
        new_root = payload["event"]["ts"]
        [answer] = await wait_replies(slack, "C1", new_root, 1, timeout=30)
        assert "said=Alice: after the failover" in answer

        follow_up = ev.envelope(ev.message(
            channel="C1", user="U2", text="and the follow-up", channel_type="channel",
            ts=slack.add_message("C1", user="U2", text="and the follow-up", thread_ts=root),
            thread_ts=root))
        await delivered(bot, follow_up)
        answers = await wait_replies(slack, "C1", root, 2, timeout=30)
        assert "said=Bob: and the follow-up" in answers[1]
        # The thread's mapping survived on the promoted replica: the same ADK session.
        assert field(answers[1], "session_id") == field(first, "session_id")

        assert bot.proc is not None and bot.proc.poll() is None and bot.proc.pid == pid
        client = new_primary.client()
        try:
            streams = [Keys(prefix).work_stream(shard) for shard in Keys(prefix).all_shards]
            await eventually(lambda: sum(client.xlen(s) for s in streams) == 0, timeout=30,
                             interval=0.05, what="work left on the new primary")
        finally:
            client.close()
        assert len(replies(slack, "C1", root)) == 2
        assert len(replies(slack, "C1", new_root)) == 1
    finally:
        await bot.close()


async def withheld(bot: BotProcess) -> float:
    metrics = (await bot.http.get(f"{bot.url}/metrics")).text
    line = next(line for line in metrics.splitlines()
                if line.startswith("slackbot_acks_withheld_total "))
    return float(line.split()[1])


async def test_durable_acks_wait_for_the_replica(
    slack: FakeSlack, adk: AdkServer, prefix: str, replicated: tuple[RedisServer, RedisServer]
) -> None:
    primary, replica = replicated
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=primary.url,
                     redis_min_replicas="1",
                     redis_min_replicas_timeout_ms=str(REPLICA_TIMEOUT_MS))
    await bot.start()
    try:
        # The replica confirms: acked (say checks the 200s), answered.
        root = await say(slack, bot, user="U1", text="with a replica", mention=True)
        await wait_replies(slack, "C1", root, 1, timeout=20)
        assert await withheld(bot) == 0

        replica.freeze()
        payload = mention(slack, "while the replica sleeps")
        started = time.monotonic()
        response = await bot.send(payload)
        took = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert REPLICA_TIMEOUT_MS / 1000 <= took < REPLICA_TIMEOUT_MS / 1000 + 3, took
        assert await withheld(bot) == 1
        record = await bot.wait_log(lambda r: str(r.get("message", "")).startswith(
            "event not acked: 0 of 1 replica(s) confirmed it in time"))
        assert record["level"] == "warning" and record["event_id"] == payload["event_id"]
        assert "sleeps" not in bot.log()  # never the message text

        replica.thaw()
        await eventually(lambda: linked(replica), timeout=15, interval=0.05,
                         what="the replica did not come back")
        # Slack's redelivery: the event is on the primary (a duplicate), confirmed now.
        assert (await bot.send(payload, retry_num=1)).status_code == 200
        ts = payload["event"]["ts"]
        [answer] = await wait_replies(slack, "C1", ts, 1, timeout=30)
        assert "said=Alice: while the replica sleeps" in answer
        await bot.wait_idle()
        assert len(replies(slack, "C1", ts)) == 1
        assert await withheld(bot) == 1
    finally:
        await bot.close()


async def test_durable_acks_in_socket_mode_withhold_the_envelope_ack(
    slack: FakeSlack, adk: AdkServer, prefix: str, replicated: tuple[RedisServer, RedisServer]
) -> None:
    """Socket Mode has no status code: an event the replica did not confirm is left
    unacknowledged, so Slack delivers the envelope again (retry_attempt 1), and that
    delivery, confirmed, is acked and answered once."""
    primary, replica = replicated
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=primary.url,
                     slack_app_token=slack.app_token, redis_min_replicas="1",
                     redis_min_replicas_timeout_ms=str(REPLICA_TIMEOUT_MS))
    await bot.start()
    try:
        await slack.wait_socket_connected(timeout=15)
        replica.freeze()
        payload = mention(slack, "over the socket while the replica sleeps")
        first = await slack.push_event(payload)
        await bot.wait_log(lambda r: str(r.get("message", "")).startswith(
            "event not acked: 0 of 1 replica(s) confirmed it in time"))
        replica.thaw()
        await eventually(lambda: linked(replica), timeout=15, interval=0.05,
                         what="the replica did not come back")
        again = await slack.push_event(payload, retry_attempt=1, retry_reason="timeout")
        await slack.wait_for_ack(again, timeout=15)
        ts = payload["event"]["ts"]
        [answer] = await wait_replies(slack, "C1", ts, 1, timeout=30)
        assert "said=Alice: over the socket while the replica sleeps" in answer
        await bot.wait_idle()
        # The first delivery's handling ended (its log line) long before the second was
        # acked: had it been acked, that ack would be here.
        assert [a for a in slack.socket_acks if a.get("envelope_id") == first] == []
        assert len(replies(slack, "C1", ts)) == 1
        assert await withheld(bot) == 1
    finally:
        await bot.close()


async def test_doctor_asks_the_sentinels(slack: FakeSlack, adk: AdkServer, prefix: str) -> None:
    password = "sentinel-secret-for-doctor"
    topology = SentinelTopology(sentinel_password=password)
    try:
        await topology.start()
        env = cli_env(slack, adk, prefix, redis_min_replicas="1", **topology.bot_settings())
        del env["REDIS_URL"]  # not needed in Sentinel mode
        # Only the Redis check is looked at (this fake Slack lacks a scope doctor wants).
        _, out, err = await run_cli("doctor", "--json", env=env)
        [check] = [c for c in json.loads(out)["checks"] if c["name"] == "Redis"]
        primary = topology.primary.port
        assert check["status"] in ("ok", "warning"), check  # persistence is off here
        assert check["summary"].startswith(f"'mymaster' at 127.0.0.1:{primary} (Sentinel, "
                                           "1 replica(s))")
        assert "1 replica(s) connected" in check["summary"]
        assert [d for d in check["details"] if d.startswith("Sentinel ")] == [
            f"Sentinel 127.0.0.1:{s.port}: primary 'mymaster' at 127.0.0.1:{primary}, "
            "1 replica(s) up, 2 other Sentinel(s), quorum 2" for s in topology.sentinels]
        assert password not in out + err

        env["REDIS_SENTINEL_MASTER"] = "elsewhere"
        code, out, err = await run_cli("doctor", "--json", env=env)
        assert code == 1
        [check] = [c for c in json.loads(out)["checks"] if c["name"] == "Redis"]
        assert check["status"] == "problem"
        assert check["summary"] == "no Sentinel names a primary for 'elsewhere'"
        assert all("does not monitor 'elsewhere'" in d for d in check["details"])
    finally:
        topology.cleanup()

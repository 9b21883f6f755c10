"""Nothing lost, nothing doubled: kill -9 mid-turn and mid-delivery, SIGTERM, Redis outages,
several replicas. Real processes throughout."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from bot.config import Settings
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import BotProcess
from tests.integration.redis_server import RedisServer
from tests.integration.slack_user import replies, say, wait_replies
from tests.waiting import eventually

FAST_RECLAIM = {"reclaim_idle_seconds": "2", "lock_ttl_seconds": "1"}


async def redis_back(bot: BotProcess) -> None:
    """Wait until the bot reaches its Redis again (after an outage)."""
    async def ready() -> bool:
        response = await bot.http.get(f"{bot.url}/readyz")
        return response.status_code == 200 and response.json().get("redis") is True

    await eventually(ready, timeout=15, interval=0.1, what="/readyz: Redis still down")


def parts_of(slack: FakeSlack, channel: str, root: str, turn_ts: str) -> list[int]:
    return [m["metadata"]["event_payload"]["part"] for m in slack.bot_replies(channel, root)
            if (m.get("metadata") or {}).get("event_payload", {}).get("turn") == turn_ts]


async def test_kill_9_mid_turn_is_answered_once_by_the_next_process(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    first = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    await first.start()
    second = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    try:
        root = await say(slack, first, user="U1", text="long job sleep=3", mention=True)
        await slack.wait_for_calls("assistant.threads.setStatus", 1)  # the turn is running
        await first.stop(kill=True)
        killed_at = time.monotonic()
        await second.start()
        [answer] = await wait_replies(slack, "C1", root, 1, timeout=30)
        took = time.monotonic() - killed_at
        assert "said=Alice: long job sleep=3" in answer
        assert took < 15, f"reclaimed after {took:.1f}s"
        await second.wait_idle()
        assert len(replies(slack, "C1", root)) == 1
    finally:
        await first.close()
        await second.close()


async def test_kill_9_mid_delivery_posts_each_part_exactly_once(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    first = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    await first.start()
    second = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    try:
        slack.set_delay("chat.postMessage", 1.5)  # Slack is slow: the bot dies mid-post
        root = await say(slack, first, user="U1", text="long=15000", mention=True)
        await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) >= 1, timeout=20)
        await first.stop(kill=True)
        slack.set_delay("chat.postMessage", 0)
        # Slack still completes the post the dead process sent: part 0 is in the thread.
        await slack.wait_for(lambda s: len(s.bot_replies("C1", root)) >= 1, timeout=10)
        await second.start()
        await slack.wait_for(lambda s: len(s.bot_replies("C1", root)) >= 2, timeout=30)
        await second.wait_idle()
        assert sorted(parts_of(slack, "C1", root, root)) == [0, 1]
        combined = "".join(m["text"] for m in slack.bot_replies("C1", root))
        assert combined.count("turn=1") == 1  # the agent ran once: delivered from the outbox
        assert any(r.get("outcome") == "recovered" for r in second.log_records())
    finally:
        await first.close()
        await second.close()


async def test_sigterm_lets_a_running_turn_finish(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="finish me sleep=2", mention=True)
    await slack.wait_for_calls("assistant.threads.setStatus", 1)
    assert await bot.stop() == 0
    assert "said=Alice: finish me sleep=2" in replies(slack, "C1", root)[0]


async def test_sigterm_hands_unfinished_work_to_another_replica(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    leaving = BotProcess(slack, adk.base_url, prefix=prefix, shutdown_grace_seconds="0.5")
    staying = BotProcess(slack, adk.base_url, prefix=prefix)  # default 60 s reclaim
    await leaving.start()
    await staying.start()
    try:
        runs = adk.log_text().count("POST /run_sse")
        root = await say(slack, leaving, user="U1", text="slow sleep=3", mention=True)
        await slack.wait_for_calls("assistant.threads.setStatus", 1)
        await eventually(lambda: adk.log_text().count("POST /run_sse") > runs,
                         what="the agent run did not start")  # mid-run from here on
        stopped_at = time.monotonic()
        assert await leaving.stop() == 0
        [answer] = await wait_replies(slack, "C1", root, 1, timeout=20)
        assert time.monotonic() - stopped_at < 10  # handed back, not waiting for reclaim
        assert "said=Alice: slow sleep=3" in answer
        await staying.wait_idle()
        assert len(replies(slack, "C1", root)) == 1
    finally:
        await leaving.close()
        await staying.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True)
    server.start()
    yield server
    server.cleanup()


async def test_redis_outage_at_intake_asks_slack_to_redeliver(
    slack: FakeSlack, adk: AdkServer, prefix: str, own_redis: RedisServer
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=own_redis.url)
    await bot.start()
    try:
        own_redis.stop()
        text = f"<@{slack.bot_user_id}> during the outage"
        ts = slack.add_message("C1", user="U1", text=text)
        mention = ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))
        response = await bot.send(mention)
        assert response.status_code >= 500  # not acked: Slack delivers it again
        ready = await bot.http.get(f"{bot.url}/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False
        assert (await bot.http.get(f"{bot.url}/healthz")).status_code == 200
        own_redis.start()
        await redis_back(bot)
        assert (await bot.send(mention, retry_num=1)).status_code == 200  # Slack's retry
        [answer] = await wait_replies(slack, "C1", ts, 1, timeout=20)
        assert "said=Alice: during the outage" in answer
        # /readyz reuses a result for READYZ_CACHE_SECONDS: ready again within that.
        deadline = time.monotonic() + Settings.model_fields["readyz_cache_seconds"].default + 5
        while (await bot.http.get(f"{bot.url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "/readyz never recovered"
            await asyncio.sleep(0.1)
        assert bot.proc is not None and bot.proc.poll() is None
    finally:
        await bot.close()


async def test_redis_outage_mid_turn_recovers_by_itself(
    slack: FakeSlack, adk: AdkServer, prefix: str, own_redis: RedisServer
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=own_redis.url,
                     **FAST_RECLAIM)
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="through the outage sleep=1.5",
                         mention=True)
        await slack.wait_for_calls("assistant.threads.setStatus", 1)
        own_redis.stop()
        # The turn ends while Redis is down: saving its answer fails.
        await bot.wait_log(lambda r: str(r.get("message")).startswith(
            "Redis failed while working on a thread"), timeout=20)
        own_redis.start()
        [answer] = await wait_replies(slack, "C1", root, 1, timeout=40)
        assert "said=Alice: through the outage sleep=1.5" in answer
        await say(slack, bot, user="U2", text="and after", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2, timeout=20)
        assert "said=Bob: and after" in answers[1]
        await bot.wait_idle()
        assert len(replies(slack, "C1", root)) == 2
        assert bot.proc is not None and bot.proc.poll() is None
    finally:
        await bot.close()


async def test_three_replicas_answer_everything_exactly_once_in_order(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    http = [BotProcess(slack, adk.base_url, prefix=prefix) for _ in range(2)]
    socket = BotProcess(slack, adk.base_url, prefix=prefix, slack_app_token=slack.app_token)
    for process in [*http, socket]:
        await process.start()
    await slack.wait_socket_connected(timeout=15)
    rng = random.Random(7)
    try:
        async def deliver(payload: dict) -> None:
            # Each delivery goes to a random replica; some are redelivered elsewhere.
            for attempt in range(2 if rng.random() < 0.3 else 1):
                target = rng.randrange(3)
                if target == 2:
                    envelope_id = await slack.push_event(payload, retry_attempt=attempt)
                    await slack.wait_for_ack(envelope_id)
                else:
                    response = await http[target].send(payload, retry_num=attempt or None)
                    assert response.status_code == 200

        async def conversation(i: int) -> str:
            text = f"<@{slack.bot_user_id}> thread {i} q0 sleep=0.2"
            root = slack.add_message("C1", user="U1", text=text)
            await asyncio.gather(
                deliver(ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=root))),
                deliver(ev.envelope(ev.message(channel="C1", user="U1", text=text, ts=root))),
            )
            for q in (1, 2):
                follow = f"thread {i} q{q}"
                ts = slack.add_message("C1", user="U2", text=follow, thread_ts=root)
                await deliver(ev.envelope(ev.message(channel="C1", user="U2", text=follow, ts=ts,
                                                     thread_ts=root)))
            return root

        roots = await asyncio.gather(*(conversation(i) for i in range(20)))
        await slack.wait_for(lambda s: all(len(s.bot_replies("C1", r)) >= 3 for r in roots),
                             timeout=60)
        await http[0].wait_idle()  # all replicas: they share the work stream
        for i, root in enumerate(roots):
            said = [a.split("said=")[1].split("\n")[0] for a in replies(slack, "C1", root)]
            assert said == [f"Alice: thread {i} q0 sleep=0.2", f"Bob: thread {i} q1",
                            f"Bob: thread {i} q2"], said
        per_process = [
            sum(1 for r in p.log_records() if r.get("message", "").startswith("turn "))
            for p in [*http, socket]
        ]
        assert sum(per_process) == 60 and sum(1 for n in per_process if n > 0) >= 2, per_process
    finally:
        for process in [*http, socket]:
            await process.close()


async def test_socket_mode_withholds_the_ack_while_redis_is_down(
    slack: FakeSlack, adk: AdkServer, prefix: str, own_redis: RedisServer
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=own_redis.url,
                     slack_app_token=slack.app_token)
    await bot.start()
    try:
        await slack.wait_socket_connected(timeout=15)
        own_redis.stop()
        text = f"<@{slack.bot_user_id}> socket outage"
        ts = slack.add_message("C1", user="U1", text=text)
        mention = ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))
        envelope_id = await slack.push_event(mention)
        # The listener fails (Redis is down), and an event whose listener failed is not
        # acked: Slack retries it.
        await bot.wait_log(lambda r: r.get("logger") == "bot.bolt" and str(
            r.get("message")).startswith("Failed to run listener function"))
        assert not [a for a in slack.socket_acks if a.get("envelope_id") == envelope_id]
        own_redis.start()
        await redis_back(bot)
        again = await slack.push_event(mention, retry_attempt=1, retry_reason="timeout")
        await slack.wait_for_ack(again, timeout=10)
        [answer] = await wait_replies(slack, "C1", ts, 1, timeout=20)
        assert "said=Alice: socket outage" in answer
    finally:
        await bot.close()


async def test_turn_ceiling_and_status_kept_alive(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, turn_timeout_seconds="3",
                     status_refresh_seconds="0.5")
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="takes a while sleep=2", mention=True)
        [answer] = await wait_replies(slack, "C1", root, 1, timeout=15)
        assert "said=Alice: takes a while sleep=2" in answer
        statuses = [c for c in slack.calls_to("assistant.threads.setStatus")
                    if c.params.get("thread_ts") == root]
        assert len(statuses) >= 3  # set again while the 2-second turn ran
        await say(slack, bot, user="U1", text="too long sleep=6", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2, timeout=15)
        assert "took too long" in answers[1] and "ref `" in answers[1]
    finally:
        await bot.close()


async def test_intake_and_worker_roles_split_the_work(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    intake = BotProcess(slack, adk.base_url, prefix=prefix, role="intake")
    worker = BotProcess(slack, adk.base_url, prefix=prefix, role="worker")
    await intake.start()
    await worker.start()
    try:
        roots = [await say(slack, intake, user="U1", text=f"split {i}", mention=True)
                 for i in range(3)]
        for i, root in enumerate(roots):
            [answer] = await wait_replies(slack, "C1", root, 1)
            assert f"said=Alice: split {i}" in answer

        def turns() -> list[int]:
            return [sum(1 for r in p.log_records() if r.get("message", "").startswith("turn "))
                    for p in (intake, worker)]

        # A turn's log line comes just after its answer reached Slack: wait for it.
        await eventually(lambda: turns() == [0, 3], what=lambda: str(turns()))
        assert (await worker.http.post(f"{worker.url}/slack/events")).status_code in (404, 405)
    finally:
        await intake.close()
        await worker.close()


async def test_kill_9_mid_stream_leaves_one_answer(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    first = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    await first.start()
    second = BotProcess(slack, adk.base_url, prefix=prefix, **FAST_RECLAIM)
    try:
        root = await say(slack, first, user="U1", text="stream chunks=20 gap=0.3", mention=True)
        await slack.wait_for(lambda s: any(c.ok for c in s.calls_to("chat.appendStream")),
                             timeout=20)  # some of the answer is in Slack
        await first.stop(kill=True)
        [partial] = slack.bot_replies("C1", root)
        await second.start()
        await slack.wait_for(
            lambda s: any(c.ok and c.params.get("metadata") for c in s.calls_to("chat.update")),
            timeout=40)
        await second.wait_idle()
        [answer] = slack.bot_replies("C1", root)  # the half-written one was removed
        assert answer["ts"] != partial["ts"]
        assert "said=Alice: stream chunks=20 gap=0.3" in message_text(answer)
        assert any(c.ok and c.params.get("ts") == partial["ts"]
                   for c in slack.calls_to("chat.delete"))
    finally:
        await first.close()
        await second.close()


async def test_a_post_whose_reply_is_lost_is_not_posted_twice(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """Slack posts a reply part but the connection drops before it answers: the bot must
    not post it again blindly (neither the HTTP client's retry nor the delivery's); it
    finds the part in the thread by its metadata and goes on with the rest."""
    slack.lose_reply_next("chat.postMessage")
    root = await say(slack, bot, user="U1", text="long=15000", mention=True)
    await slack.wait_for(lambda s: len(s.bot_replies("C1", root)) >= 2, timeout=30)
    await bot.wait_idle()
    lost = [c for c in slack.calls_to("chat.postMessage") if c.failed]
    assert len(lost) == 1  # the fault happened
    parts = parts_of(slack, "C1", root, root)
    assert parts and sorted(parts) == sorted(set(parts)), parts  # each part once
    assert parts == list(range(len(parts)))

"""A turn that kills its worker every time it runs is given up after MAX_TURN_ATTEMPTS
attempts, with a notice in its thread, instead of crash-looping every replica. Real
processes, really killed (kill -9) while the turn runs."""

from __future__ import annotations

from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import replies, say, wait_replies

FAST_RECLAIM = {"reclaim_idle_seconds": "2", "lock_ttl_seconds": "1"}
GIVEN_UP = "I couldn't answer this message: trying to answer it stopped the bot 3 times"


async def test_a_turn_that_kills_its_worker_three_times_is_given_up_once(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, max_turn_attempts="3", **FAST_RECLAIM)
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="poison sleep=60", mention=True)
        for attempt in (1, 2, 3):
            # The attempt is running (its status shows once ADK has the question): kill the
            # process, as an out-of-memory kill would, and start it again.
            await slack.wait_for_calls("assistant.threads.setStatus", attempt, timeout=30,
                                       thread_ts=root)
            await bot.stop(kill=True)
            await bot.start()
        [notice] = await wait_replies(slack, "C1", root, 1, timeout=30)
        assert GIVEN_UP in notice and "(ref `" in notice
        # Not run a fourth time: its status was never shown again.
        assert len(slack.matching_calls("assistant.threads.setStatus", thread_ts=root)) == 3
        metrics = (await bot.http.get(f"{bot.url}/metrics")).text
        assert "slackbot_turns_given_up_total 1.0" in metrics.splitlines()
        assert any(r.get("outcome") == "given_up" for r in bot.log_records())

        # The thread goes on: the next message is answered, and the notice came once.
        await say(slack, bot, user="U2", text="and now?", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2, timeout=30)
        assert "said=Bob: and now?" in answers[1]
        assert sum(GIVEN_UP in text for text in replies(slack, "C1", root)) == 1
    finally:
        await bot.close()

"""The memory attached files take in one process is bounded (MAX_ATTACHMENT_MEMORY_BYTES):
a second turn's files wait for the first's, or are left out with a note when the wait is too
long, and every turn is answered. A real bot process, files served by the fake Slack."""

from __future__ import annotations

from bot.memory_budget import MEMORY_PER_FILE_BYTE
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import wait_replies

FILE_BYTES = 60 * 1024
# Room for one such file at a time: a file takes MEMORY_PER_FILE_BYTE times its size until
# ADK has it.
LIMITS = {"max_attachment_bytes": str(64 * 1024),
          "max_attachment_memory_bytes": str(MEMORY_PER_FILE_BYTE * 64 * 1024)}
BUSY = ("was not passed on: too many files are being processed right now; "
        "send it again in a moment")


async def ask_with_file(slack: FakeSlack, bot: BotProcess, file_id: str, name: str,
                        extra: str = "") -> str:
    f = slack.add_file(file_id, name, "text/csv", b"x" * FILE_BYTES)
    text = f"<@{slack.bot_user_id}> what is in {name}?{extra}"
    ts = slack.add_message("C1", user="U1", text=text)
    response = await bot.send(ev.envelope(ev.app_mention(channel="C1", user="U1", text=text,
                                                         ts=ts, files=[f])))
    assert response.status_code == 200
    return ts


def waiting_for_memory(bot: BotProcess) -> bool:
    return any(r.get("message", "").startswith("waiting for memory for attached files")
               for r in bot.log_records())


async def test_a_second_turns_file_waits_for_the_memory_of_the_first(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **LIMITS)
    await bot.start()
    try:
        slack.hold_download("F1")  # the first turn's download is slow: it holds the memory
        # (and the agent takes 10 s over it)
        first = await ask_with_file(slack, bot, "F1", "first.csv", " sleep=10")
        await slack.wait_for_calls("download", 1, file_id="F1")
        second = await ask_with_file(slack, bot, "F2", "second.csv")
        await slack.wait_for(lambda _: waiting_for_memory(bot), timeout=15)
        assert slack.matching_calls("download", file_id="F2") == []
        slack.release_download("F1")
        # The memory came back once ADK had the first message, not when its turn ended: the
        # second is answered, with its file, while the agent still works on the first.
        [answer] = await wait_replies(slack, "C1", second, 1, timeout=30)
        assert slack.bot_replies("C1", first) == []
        assert "(attached file: second.csv, text/csv)" in answer
        assert f"part: text/csv {FILE_BYTES} bytes" in answer
        [answer] = await wait_replies(slack, "C1", first, 1, timeout=30)
        assert "(attached file: first.csv, text/csv)" in answer
        assert f"part: text/csv {FILE_BYTES} bytes" in answer
    finally:
        await bot.close()


async def test_a_file_that_gets_no_memory_in_time_is_noted_and_the_turn_answered(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, attachment_memory_wait_seconds="0.5",
                     **LIMITS)
    await bot.start()
    try:
        slack.hold_download("F1")
        first = await ask_with_file(slack, bot, "F1", "first.csv")
        await slack.wait_for_calls("download", 1, file_id="F1")
        second = await ask_with_file(slack, bot, "F2", "second.csv")
        # The first turn still holds the memory: the second gives up waiting and answers
        # without its file, saying so.
        note, answer = await wait_replies(slack, "C1", second, 2, timeout=30)
        assert note == f":paperclip: `second.csv` {BUSY}."
        lines = answer.splitlines()
        assert "said=Alice: what is in second.csv?" in lines
        assert not [line for line in lines if line.startswith("part: ")]
        assert slack.matching_calls("download", file_id="F2") == []
        slack.release_download("F1")
        [answer] = await wait_replies(slack, "C1", first, 1, timeout=30)
        assert f"part: text/csv {FILE_BYTES} bytes" in answer
    finally:
        await bot.close()

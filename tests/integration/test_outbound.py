"""What the bot sends to Slack, end to end (the bot process, the fake Slack, the real ADK with
the test agent): nothing notifies a crowd, names and questions from users or the agent are
shown as written, and artifact names that would leave the session's artifacts are refused."""

from __future__ import annotations

import pytest

from tests.adk_agents.test_agent.agent import TRAVERSAL_ARTIFACTS
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.broadcasts import broadcasts_in_calls
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.conftest import MakeBot
from tests.integration.harness import BotProcess
from tests.integration.slack_user import say

WJ = "\u2060"


def reply_texts(slack: FakeSlack, thread_ts: str) -> list[str]:
    """The mrkdwn `text` of each of the bot's messages in the thread, as Slack keeps it."""
    return [str(m.get("text") or "") for m in slack.bot_replies("C1", thread_ts)]


async def wait_reply_with(slack: FakeSlack, thread_ts: str, fragment: str) -> str:
    def found(s: FakeSlack) -> str | None:
        return next((message_text(m) for m in s.bot_replies("C1", thread_ts)
                     if fragment in message_text(m)), None)

    return str(await slack.wait_for(found, timeout=30))


@pytest.mark.parametrize("streaming", ["native", "placeholder"])
async def test_nothing_the_bot_sends_notifies_a_crowd(
    slack: FakeSlack, make_bot: MakeBot, streaming: str
) -> None:
    """An answer full of broadcast mentions (streamed live, then final, with a table), a
    user's file named `<!channel>.csv` of a type the bot refuses, artifacts the agent named
    `<!channel>.csv` and `<!here> & \\`x\\`.txt` (empty), and a question from the agent
    quoting mentions and a link: no call of any method carries a broadcast."""
    bot = await make_bot(streaming=streaming)
    hostile_file = slack.add_file("F1", "<!channel>.csv", "application/zip", b"PK\x03\x04",
                                  filetype="zip")
    text = f"<@{slack.bot_user_id}> broadcast hostileartifact markdown stream chunks=2 gap=0.3"
    root = slack.add_message("C1", user="U1", text=text)
    await bot.send(ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=root,
                                              files=[hostile_file])))
    await wait_reply_with(slack, root, "is empty, so it was not uploaded")
    await say(slack, bot, user="U1", text="ask broadcast", thread_ts=root)
    question = await wait_reply_with(slack, root, "Which billing project?")

    assert broadcasts_in_calls(slack.calls) == []
    # The answer opens with them: the first live display shows them, neutralised.
    opening = f"Heads up @{WJ}channel and @{WJ}here, also @{WJ}everyone and @{WJ}here,"
    if streaming == "native":
        [start] = [c for c in slack.calls_to("chat.startStream") if c.ok]
        assert start.params["markdown_text"].startswith(opening)
    else:
        assert not slack.calls_to("chat.startStream")
        [placeholder] = [c for c in slack.calls_to("chat.postMessage") if c.ok and any(
            b["type"] == "actions" for b in c.params.get("blocks") or [])]
        assert placeholder.params["blocks"][0]["text"].startswith(opening)
    shown = "\n".join(message_text(m) for m in slack.bot_replies("C1", root))
    assert f"@{WJ}finops and @{WJ}group; plain @{WJ}channel, @{WJ}here and @{WJ}everyone" \
        in shown
    assert any(b["type"] == "table" for m in slack.bot_replies("C1", root)
               for b in m.get("blocks") or [])
    # Names are shown as written: escaped for Slack, in code.
    texts = reply_texts(slack, root)
    assert ":paperclip: `&lt;!channel&gt;.csv`: this file type isn't supported." in texts
    assert ":paperclip: `&lt;!here&gt; &amp; ˋxˋ.txt` is empty, so it was not uploaded." in texts
    [upload] = slack.uploaded_files
    assert upload.title == f"@{WJ}channel.csv" and upload.thread_ts == root
    # The agent's question: its mention and link are text, not a ping or a disguised link.
    assert "Ask &lt;!channel&gt; or &lt;@U2&gt;, see &lt;https://evil.invalid|the docs&gt;." \
        in question


async def test_artifact_names_leaving_the_session_are_refused(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer
) -> None:
    """The agent announces artifacts named `../../etc/passwd`, `/x` and `a\\..\\..\\b`: ADK
    is asked for none of them, and the user is told, each name shown as written."""
    root = await say(slack, bot, user="U1", text="traversal", mention=True)
    note = await wait_reply_with(slack, root, "not a safe file name")
    assert note == ":paperclip: " + "\n".join(
        f"• `{name}` was not uploaded: its name is not a safe file name"
        for name in TRAVERSAL_ARTIFACTS
    )
    session = f"T0001-C1-{root.replace('.', '_')}"
    requests = [line for line in adk.log_text().splitlines()
                if "passwd" in line or (session in line and "/artifacts" in line)]
    assert requests == []
    answer = next(m for m in slack.bot_replies("C1", root) if "said=" in message_text(m))
    assert "artifact=../../etc/passwd version=0" in message_text(answer)

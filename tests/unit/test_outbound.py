"""The outbound filter (bot.slack.outbound): nothing the bot sends notifies a crowd, in any
spelling, through any client, method or Bolt reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.models.blocks import SectionBlock
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_web_client
from bot.config import Settings
from bot.metrics import Metrics
from bot.runtime import build_bot
from bot.slack.blocks import render_answer
from bot.slack.outbound import neutralise, safe_cut, scrub, scrub_call
from bot.slack.stream import SlackLiveAnswer, StreamBudget, stream_chunks
from bot.turns import BotIdentity, Turn
from tests.fakes.adk_server import free_port
from tests.fakes.broadcasts import broadcasts_in, broadcasts_in_calls
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.http_stub import serving
from tests.settings import adk_client, default_settings, default_store

WJ = "\u2060"
COMMANDS = ("here", "channel", "everyone", "group")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


# ---- spellings ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("<!here>", f"@{WJ}here"),
    ("<!channel>", f"@{WJ}channel"),
    ("<!everyone>", f"@{WJ}everyone"),
    ("<!group>", f"@{WJ}group"),
    ("<!here|here>", f"@{WJ}here"),
    ("<!channel|@channel>", f"@{WJ}channel"),
    ("<!HERE>", f"@{WJ}here"),
    ("<!Channel>", f"@{WJ}channel"),
    ("< ! here >", f"@{WJ}here"),
    ("<\t!everyone >", f"@{WJ}everyone"),
    (f"<!{WJ}here>", f"@{WJ}here"),
    ("<!\u200bchannel>", f"@{WJ}channel"),
    ("<!subteam^S0614TZR7|@finops>", f"@{WJ}finops"),
    ("<!subteam^S0614TZR7|finops>", f"@{WJ}finops"),
    ("<!subteam^S0614TZR7>", f"@{WJ}group"),
    ("<!SUBTEAM^s1|@Ops Team>", f"@{WJ}Ops Team"),
    ("<!here", f"@{WJ}here"),  # no closing bracket: Slack might join it to what follows
    ("<!channel and more", f"@{WJ}channel and more"),
    ("ping @here now", f"ping @{WJ}here now"),
    ("@channel", f"@{WJ}channel"),
    ("@EVERYONE!", f"@{WJ}EVERYONE!"),
    ("*@here*", f"*@{WJ}here*"),
    ("_@channel_", f"_@{WJ}channel_"),
    ("tell <!subteam^S1|@channel>", f"tell @{WJ}channel"),
])
def test_broadcast_mentions_become_plain_text(text: str, expected: str) -> None:
    assert neutralise(text) == expected
    assert broadcasts_in(expected) == []


@pytest.mark.parametrize("text", [
    "<@U123> and <@W1|bob>", "<#C123|general>", "<https://example.com|a link>",
    "<mailto:a@b.co|a@b.co>", "<!date^1392734382^{date_short}|Feb 18, 2014>",
    "mail finance@here.com or ops@channel.io", "a < b > c & d", "@alice and @heather",
    "", "plain text",
])
def test_everything_else_is_left_alone(text: str) -> None:
    assert neutralise(text) == text


def spelling(command: str, case: list[bool], gaps: tuple[str, str, str],
             label: str | None, closed: bool) -> str:
    cased = "".join(c.upper() if up else c for c, up in zip(command, case, strict=False))
    body = f"<{gaps[0]}!{gaps[1]}{cased}"
    if command == "subteam":
        body += "^S0614TZR7"
    if label is not None:
        body += f"|{label}"
    return body + gaps[2] + (">" if closed else "")


GAP = st.text(st.sampled_from([" ", "\t", "\n", "\u200b", "\u200e", WJ, "\ufeff"]), max_size=3)
SAFE_TEXT = st.text(st.characters(blacklist_characters="<@"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    command=st.sampled_from([*COMMANDS, "subteam"]),
    case=st.lists(st.booleans(), min_size=8, max_size=8),
    gaps=st.tuples(GAP, GAP, GAP.filter(lambda g: "\n" not in g)),
    label=st.none() | st.text(st.characters(blacklist_characters="<>\n"), max_size=12),
    closed=st.booleans(),
    before=SAFE_TEXT, after=SAFE_TEXT,
)
def test_no_spelling_survives(command: str, case: list[bool], gaps: tuple[str, str, str],
                              label: str | None, closed: bool, before: str, after: str) -> None:
    text = before + spelling(command, case, gaps, label, closed) + after
    out = neutralise(text)
    assert broadcasts_in(out) == []
    assert out.startswith(before)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_neutralise_is_idempotent(text: str) -> None:
    once = neutralise(text)
    assert neutralise(once) == once


# ---- payloads -----------------------------------------------------------------------------


def test_every_string_of_a_payload_is_scrubbed_and_nothing_else_changes() -> None:
    payload: dict[str, Any] = {
        "channel": "C1", "ts": "1.2", "unfurl_links": False, "count": 3, "content": b"<!here>",
        "text": "Heads up <!channel>",
        "blocks": [
            {"type": "markdown", "text": "**<!here>** and @everyone"},
            {"type": "section", "text": {"type": "mrkdwn", "text": "<!subteam^S1|@ops>"},
             "fields": [{"type": "plain_text", "text": "<!everyone>"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "<!Channel>"}]},
            {"type": "table", "rows": [[{"type": "rich_text", "elements": [
                {"type": "rich_text_section", "elements": [
                    {"type": "text", "text": "<!here>"},
                    {"type": "broadcast", "range": "channel"},
                    {"type": "usergroup", "usergroup_id": "S1"},
                    {"type": "user", "user_id": "U1"},
                ]}]}]]},
            {"type": "actions", "elements": [{"type": "button", "action_id": "stop",
                                              "value": '{"k":"T1:C1:1.2"}',
                                              "text": {"type": "plain_text", "text": "Stop"}}]},
        ],
        "metadata": {"event_type": "reply", "event_payload": {"turn": "1.2"}},
    }
    out = scrub(payload)
    assert broadcasts_in(out) == []
    assert out["text"] == f"Heads up @{WJ}channel"
    assert out["blocks"][0]["text"] == f"**@{WJ}here** and @{WJ}everyone"
    cells = out["blocks"][3]["rows"][0][0]["elements"][0]["elements"]
    assert cells == [{"type": "text", "text": f"@{WJ}here"},
                     {"type": "text", "text": f"@{WJ}channel"},
                     {"type": "text", "text": f"@{WJ}group"},
                     {"type": "user", "user_id": "U1"}]
    assert out["blocks"][4] == payload["blocks"][4]
    for key in ("channel", "ts", "unfurl_links", "count", "content", "metadata"):
        assert out[key] == payload[key]
    assert payload["text"] == "Heads up <!channel>"  # the caller's payload is not changed


def test_json_encoded_parameters_stay_json() -> None:
    files = json.dumps([{"id": "F1", "title": "<!channel>.csv"}])
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": '<!here|"x">'}}])
    out = scrub({"files": files, "blocks": blocks, "text": "[<!here>"})
    assert json.loads(out["files"]) == [{"id": "F1", "title": f"@{WJ}channel.csv"}]
    assert json.loads(out["blocks"])[0]["text"]["text"] == f"@{WJ}here"
    assert out["text"] == f"[@{WJ}here"  # not JSON after all: scrubbed as text


def test_block_kit_objects_are_scrubbed_as_their_dicts() -> None:
    [block] = scrub([SectionBlock(text="<!here> look")])
    assert block["text"]["text"] == f"@{WJ}here look"


def test_an_answer_rendered_for_slack_notifies_nobody() -> None:
    [message] = render_answer("Owner tag: <!here> and <!subteam^S0614TZR7|@finops>, "
                              "<!channel>\n\n| who | note |\n|---|---|\n| <!here> | x |")
    assert broadcasts_in(scrub(message.blocks)) == []
    assert neutralise(message.text).startswith(
        f"Owner tag: @{WJ}here and @{WJ}finops, @{WJ}channel")


def test_chat_messages_link_no_names() -> None:
    call = scrub_call("chat.postMessage", {"json": {"channel": "C1", "text": "<!here>",
                                                    "link_names": True, "parse": "full"}})
    assert call == {"json": {"channel": "C1", "text": f"@{WJ}here", "link_names": False,
                             "parse": "none"}}
    for method in ("chat.update", "chat.postEphemeral", "chat.scheduleMessage"):
        assert scrub_call(method, {"json": {"text": "x"}})["json"]["link_names"] is False
    form = scrub_call("chat.postMessage", {"data": {"channel": "C1", "text": "@here"}})
    assert form == {"data": {"channel": "C1", "text": f"@{WJ}here", "link_names": "false",
                             "parse": "none"}}
    status = scrub_call("assistant.threads.setStatus",
                        {"json": {"status": "<!here>", "loading_messages": ["@channel"]}})
    assert status == {"json": {"status": f"@{WJ}here", "loading_messages": [f"@{WJ}channel"]}}
    upload = scrub_call("files.completeUploadExternal",
                        {"params": {"initial_comment": "<!everyone>", "files": "[]"}})
    assert upload == {"params": {"initial_comment": f"@{WJ}everyone", "files": "[]"}}


# ---- streamed pieces ----------------------------------------------------------------------


def test_a_cut_never_splits_the_opening_of_a_mention() -> None:
    line = "x" * 50 + "<!channel> done"
    for end in range(51, 60):
        assert safe_cut(line, end) == 50
    assert safe_cut(line, 50) == 50 and safe_cut(line, 61) == 61
    assert safe_cut("ab @her more", 7) == 3
    assert safe_cut("ab <!her more", 8, start=3) == 8  # a piece is never empty
    assert safe_cut("short", 9) == 5


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(
        st.integers(0, 300).map(lambda n: "x" * n),
        st.text(st.characters(blacklist_characters="<@`~\n"), max_size=20),
        st.sampled_from(["<!channel>", "<!here|here>", "< ! everyone >", "@here",
                         "<!subteam^S1|@ops>", "\n"]),
    ), max_size=60),
    limit=st.integers(250, 800),
)
def test_stream_pieces_joined_by_slack_notify_nobody(parts: list[str], limit: int) -> None:
    """Slack shows the appended pieces of a stream as one text: each piece is filtered on
    its own, so no piece may end inside a mention that the next one completes (long lines
    are cut up)."""
    text = "".join(parts)
    chunks = stream_chunks(text, limit)
    assert "".join(chunks) == text
    assert broadcasts_in("".join(neutralise(chunk) for chunk in chunks)) == []


# ---- through the bot's clients ------------------------------------------------------------


async def test_the_bots_clients_scrub_every_method(slack: FakeSlack) -> None:
    client = build_web_client(slack.bot_token, slack.base_url)
    streamer = build_web_client(slack.bot_token, slack.base_url, wait_on_429=False,
                                session=client.session)
    try:
        root = slack.add_message("C1", user="U1", text="q")
        posted = await client.chat_postMessage(
            channel="C1", thread_ts=root, text="<!channel> answer",
            blocks=[{"type": "markdown", "text": "<!channel> answer"}])
        await client.chat_update(channel="C1", ts=posted["ts"], text="<!here> v2",
                                 blocks=[{"type": "section",
                                          "text": {"type": "mrkdwn", "text": "<!here> v2"}}])
        await client.chat_postEphemeral(channel="C1", user="U1", text="<!everyone> psst")
        await client.assistant_threads_setStatus(channel_id="C1", thread_ts=root,
                                                 status="asking <!here>",
                                                 loading_messages=["@channel wait"])
        started = await streamer.chat_startStream(channel="C1", thread_ts=root,
                                                  markdown_text="<!channel> streaming",
                                                  recipient_team_id=slack.team_id,
                                                  recipient_user_id="U1")
        await streamer.chat_appendStream(channel="C1", ts=started["ts"],
                                         markdown_text=" more <!here|here>")
        await streamer.chat_stopStream(channel="C1", ts=started["ts"],
                                       blocks=[{"type": "markdown", "text": "<!everyone>"}])
        await client.files_upload_v2(channel="C1", thread_ts=root, initial_comment="<!here>",
                                     file_uploads=[{"content": b"a,b\n", "filename": "x.csv",
                                                    "title": "<!channel>.csv"}])
    finally:
        await client.session.close()  # type: ignore[union-attr]
    methods = {call.method for call in slack.calls}
    assert {"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.startStream",
            "chat.appendStream", "chat.stopStream", "assistant.threads.setStatus",
            "files.completeUploadExternal"} <= methods
    assert broadcasts_in_calls(slack.calls) == []
    [upload] = slack.uploaded_files
    assert upload.title == f"@{WJ}channel.csv" and upload.initial_comment == f"@{WJ}here"
    [append] = slack.calls_to("chat.appendStream")
    assert append.params["markdown_text"] == f" more @{WJ}here"


async def settle(live: SlackLiveAnswer) -> None:
    """Wait until the live answer has shown what it was given."""
    while live._flusher is not None and not live._flusher.done():
        await live._flusher


async def test_a_live_answer_streams_neutralised_pieces(slack: FakeSlack) -> None:
    """An agent answer quoting `<!channel>`, streamed natively through the bot's stream
    client: chat.startStream and chat.appendStream carry it neutralised."""
    client = build_web_client(slack.bot_token, slack.base_url, wait_on_429=False)
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    root = slack.add_message("C1", user="U1", text="q")
    turn = Turn(team=slack.team_id, channel="C1", thread_ts=root, ts=root, user="U1",
                text="q", kind="mention")
    budget = StreamBudget(default_store(redis), default_settings().stream_starts_per_minute)
    live = SlackLiveAnswer(client=client, turn=turn, budget=budget,
                           metrics=Metrics(), mode="native", update_interval=0,
                           append_interval=0)
    try:
        await live.delta("First line\n")
        await settle(live)  # the stream is open
        await live.delta("Tell <!channel> and <!subteam^S1|@ops>\n")
        await settle(live)
        await live.finish()
    finally:
        await redis.aclose()
        await client.session.close()  # type: ignore[union-attr]
    [append] = slack.calls_to("chat.appendStream")
    assert append.params["markdown_text"] == f"Tell @{WJ}channel and @{WJ}ops\n"
    assert broadcasts_in_calls(slack.calls) == []


# ---- through Bolt: the listeners' client, ack and respond --------------------------------


@pytest.fixture
async def bolt_bot(slack: FakeSlack) -> AsyncIterator[Any]:
    settings_ = Settings(
        slack_bot_token=SecretStr(slack.bot_token), slack_signing_secret=SecretStr("s"),
        slack_api_url=slack.base_url, adk_base_url=f"http://127.0.0.1:{free_port()}",
        adk_app_name="test_agent", redis_key_prefix="outbound",
    )
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    client = build_web_client(slack.bot_token, slack.base_url)
    adk = adk_client(settings_.adk_base_url, "test_agent")
    bot = build_bot(settings_, client=client, identity=BotIdentity("UBOT", "BBOT", "T0001"),
                    redis_client=redis, embedded=True, adk=adk)
    yield bot
    await adk.aclose()
    await redis.aclose()
    await client.session.close()  # type: ignore[union-attr]


async def test_bolt_listeners_reply_through_the_filter(slack: FakeSlack, bolt_bot: Any) -> None:
    """A listener's `client` is the bot's own (filtered) client, not the plain one Bolt
    would make per request; its `ack` and `respond` (the response_url) are filtered too."""
    hooks: list[Any] = []

    async def response_url(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response(text="ok")

    async def probe(ack: AsyncAck, respond: AsyncRespond, client: AsyncWebClient) -> None:
        await ack(text="<!here> ack")
        await respond(text="<!channel> respond", blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "<!everyone>"}}])
        await respond({"text": "<!subteam^S1|@ops> again"})
        await client.chat_postEphemeral(channel="C1", user="U1", text="<!here> note")

    bolt_bot.bolt.action("probe")(probe)
    async with serving(response_url) as url:
        body = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T0001"},
                "channel": {"id": "C1"}, "response_url": f"{url}/hook", "trigger_id": "1.2",
                "api_app_id": "A1", "container": {"type": "message", "channel_id": "C1",
                                                  "message_ts": "1.1"},
                "actions": [{"type": "button", "action_id": "probe", "value": "x",
                             "action_ts": "1.3"}]}
        response = await bolt_bot.bolt.async_dispatch(AsyncBoltRequest(body=body,
                                                                       mode="socket_mode"))
    assert response.status == 200
    assert response.body == f"@{WJ}here ack"
    assert [hook["text"] for hook in hooks] == [f"@{WJ}channel respond", f"@{WJ}ops again"]
    assert broadcasts_in(hooks) == []
    [note] = slack.calls_to("chat.postEphemeral")
    assert note.params["text"] == f"@{WJ}here note"
    assert note.params["link_names"] is False  # sent by the bot's client, not Bolt's own

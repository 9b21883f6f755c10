"""Self-tests for the test doubles in ``tests/fakes``: the fake Slack (Web API, files, Socket
Mode) and the signed event builders. The ADK test agent on a real `adk api_server` is
checked in tests/integration/test_fakes.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack, message_text

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.base_url, team_id="T0001")


# ---------------------------------------------------------------- FakeSlack


async def test_auth_test(slack: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["user_id"] == "UBOT"
    assert resp["bot_id"] == "BBOT"
    assert resp["team_id"] == "T0001"
    assert "chat:write" in resp.headers["x-oauth-scopes"].split(",")
    call = slack.calls_to("auth.test")[0]
    assert call.params["team_id"] == "T0001"  # the client's default param is accepted
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_auth_errors(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as e:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url).auth_test()
    assert e.value.response["error"] == "invalid_auth"
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.post(slack.base_url + "auth.test")
        assert r.json() == {"ok": False, "error": "not_authed"}
        # token as a form field is accepted too
        r = await http.post(slack.base_url + "auth.test", data={"token": TOKEN})
        assert r.json()["ok"] is True
        r = await http.post(
            slack.base_url + "no.such", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.json() == {"ok": False, "error": "unknown_method"}


async def test_post_message_and_replies(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U1", "alice", real_name="Alice Example")
    parent = slack.add_message("C1", user="U1", text="<@UBOT> hello")
    reply = slack.add_message("C1", user="U1", text="more", thread_ts=parent)
    resp = await client.chat_postMessage(channel="C1", thread_ts=parent, text="hi there")
    assert resp["ts"] > reply
    assert resp["message"]["bot_id"] == "BBOT"

    msgs = slack.thread_messages("C1", parent)
    assert [m["ts"] for m in msgs] == [parent, reply, resp["ts"]]
    bot = slack.bot_replies("C1", parent)
    assert len(bot) == 1 and bot[0]["text"] == "hi there" and bot[0]["user"] == "UBOT"

    replies = await client.conversations_replies(channel="C1", ts=parent)
    assert [m["ts"] for m in replies["messages"]] == [parent, reply, resp["ts"]]
    assert replies["messages"][0]["reply_count"] == 2
    assert replies["has_more"] is False

    page1 = await client.conversations_replies(channel="C1", ts=parent, limit=2)
    assert len(page1["messages"]) == 2 and page1["has_more"] is True
    cursor = page1["response_metadata"]["next_cursor"]
    page2 = await client.conversations_replies(channel="C1", ts=parent, limit=2, cursor=cursor)
    assert [m["ts"] for m in page2["messages"]] == [resp["ts"]]
    assert page2["response_metadata"]["next_cursor"] == ""

    with pytest.raises(SlackApiError) as e:
        await client.conversations_replies(channel="C1", ts="1.000001")
    assert e.value.response["error"] == "thread_not_found"

    user = await client.users_info(user="U1")
    assert user["user"]["real_name"] == "Alice Example"
    assert user["user"]["profile"]["display_name"] == "alice"
    with pytest.raises(SlackApiError) as e:
        await client.users_info(user="UNOPE")
    assert e.value.response["error"] == "user_not_found"


async def test_update_delete_reactions(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", user="U1", text="q")
    posted = await client.chat_postMessage(channel="C1", thread_ts=parent, text="thinking")
    await client.chat_update(channel="C1", ts=posted["ts"], markdown_text="**done**")
    msg = slack.get_message("C1", posted["ts"])
    assert msg is not None and msg["text"] == "**done**" and "edited" in msg
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C1", ts=parent, text="hijack")
    assert e.value.response["error"] == "cant_update_message"

    await client.reactions_add(channel="C1", timestamp=parent, name="eyes")
    with pytest.raises(SlackApiError) as e:
        await client.reactions_add(channel="C1", timestamp=parent, name="eyes")
    assert e.value.response["error"] == "already_reacted"
    await client.reactions_remove(channel="C1", timestamp=parent, name="eyes")
    assert slack.reactions_on("C1", parent) == []

    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert slack.bot_replies("C1", parent) == []


async def test_block_validation(slack: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "bogus"}])
    assert e.value.response["error"] == "invalid_blocks"

    many = [{"type": "divider"}] * 51
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", blocks=many)
    assert e.value.response["error"] == "msg_blocks_too_many"

    table = {"type": "table", "rows": [[{"type": "raw_text", "text": "a"}]]}
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", blocks=[table, table])
    assert e.value.response["error"] == "invalid_blocks"

    big_md = [{"type": "markdown", "text": "a" * 6001}] * 2
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", blocks=big_md)
    assert e.value.response["error"] == "msg_blocks_too_long"

    section = {"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3001}}
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", blocks=[section])
    assert e.value.response["error"] == "invalid_blocks"

    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", markdown_text="y")
    assert e.value.response["error"] == "markdown_text_conflict"

    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", markdown_text="y" * 12_001)
    assert e.value.response["error"] == "msg_too_long"

    with pytest.raises(SlackApiError) as e:
        await client.api_call("chat.postMessage", json={"channel": "C1"})
    assert e.value.response["error"] == "no_text"

    resp = await client.chat_postMessage(channel="C1", text="z" * 40_500)
    assert resp["warning"] == "message_truncated"
    assert len(slack.get_message("C1", resp["ts"])["text"]) == 40_000  # type: ignore[index]


async def test_form_encoded_blocks(slack: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "markdown", "text": "# Title\n**bold**"}]
    resp = await client.api_call(
        "chat.postMessage",
        data={"channel": "C1", "text": "fallback", "blocks": json.dumps(blocks)},
    )
    call = slack.calls_to("chat.postMessage")[-1]
    assert call.params["blocks"] == blocks
    msg = slack.get_message("C1", resp["ts"])
    assert msg is not None and "**bold**" in message_text(msg)
    with pytest.raises(SlackApiError) as e:
        await client.api_call(
            "chat.postMessage",
            data={"channel": "C1", "blocks": json.dumps([{"type": "nope"}])},
        )
    assert e.value.response["error"] == "invalid_blocks"


async def test_fault_injection(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", retry_after=2)
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="hi")
    assert e.value.response.status_code == 429
    assert e.value.response["error"] == "ratelimited"
    assert e.value.response.headers["Retry-After"] == "2"
    assert slack.calls_to("chat.postMessage")[0].failed

    slack.fail_next("chat.update", status=500)
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C1", ts="1.1", text="x")
    assert e.value.response.status_code == 500

    slack.fail_next("reactions.add", status=200, error="channel_not_found")
    with pytest.raises(SlackApiError) as e:
        await client.reactions_add(channel="C1", timestamp="1.1", name="eyes")
    assert e.value.response["error"] == "channel_not_found"

    await client.chat_postMessage(channel="C1", text="hi")  # next one succeeds
    assert len(slack.bot_replies("C1", "nope")) == 0
    assert [c.failed for c in slack.calls_to("chat.postMessage")] == [True, False]

    slack.set_delay("auth.test", 0.2)
    start = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - start >= 0.2


def _modal(**overrides: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal", "callback_id": "cb", "private_metadata": "{}",
        "title": {"type": "plain_text", "text": "A title"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [{"type": "input", "block_id": "b", "optional": True,
                    "label": {"type": "plain_text", "text": "Say"},
                    "element": {"type": "plain_text_input", "action_id": "a",
                                "multiline": True, "max_length": 3000}}],
    }
    view.update(overrides)
    return view


async def test_views_open_needs_a_fresh_unused_trigger(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    trigger = slack.issue_trigger_id(user="U1")
    response = await client.views_open(trigger_id=trigger, view=_modal())
    view = response["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "cb"
    assert view["state"] == {"values": {}} and view["private_metadata"] == "{}"
    assert view["team_id"] == "T0001" and view["bot_id"] == "BBOT"
    assert slack.opened_views("cb") == [view] and slack.opened_views("other") == []
    # a trigger opens one view
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id=trigger, view=_modal())
    assert e.value.response["error"] == "exchanged_trigger_id"
    # one Slack never sent, and one older than 3 seconds
    for pointer, error in (("1.2.abc", "invalid_trigger_id"),
                           (slack.issue_trigger_id(user="U1", age=3.5), "expired_trigger_id")):
        with pytest.raises(SlackApiError) as e:
            await client.views_open(trigger_id=pointer, view=_modal())
        assert e.value.response["error"] == error
    # the fake's clock ages them too
    later = slack.issue_trigger_id(user="U1")
    slack.advance_clock(3.1)
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id=later, view=_modal())
    assert e.value.response["error"] == "expired_trigger_id"
    # a workspace the token's installation does not act in
    slack.add_team("T0002", "Other")
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id=slack.issue_trigger_id(user="U9", team_id="T0002"),
                                view=_modal())
    assert e.value.response["error"] == "invalid_trigger_id"
    assert len(slack.opened_views()) == 1


@pytest.mark.parametrize(("overrides", "pointer"), [
    ({"type": "home"}, "/view/type"),
    ({"title": {"type": "plain_text", "text": "x" * 25}}, "/view/title/text"),
    ({"title": {"type": "mrkdwn", "text": "x"}}, "/view/title"),
    ({"submit": {"type": "plain_text", "text": "s" * 25}}, "/view/submit/text"),
    ({"close": {"type": "plain_text", "text": "c" * 25}}, "/view/close/text"),
    ({"submit": None}, "/view/submit"),
    ({"callback_id": "c" * 256}, "/view/callback_id"),
    ({"private_metadata": "m" * 3001}, "/view/private_metadata"),
    ({"blocks": [{"type": "divider"}] * 101}, "/view/blocks"),
    ({"blocks": [{"type": "context_actions", "elements": []}]}, "/view/blocks/0"),
    ({"blocks": [{"type": "input", "label": {"type": "plain_text", "text": "L"},
                  "element": {"type": "plain_text_input"}}]},
     "/view/blocks/0/element/action_id"),
    ({"blocks": [{"type": "input", "label": {"type": "plain_text", "text": "L"},
                  "element": {"type": "plain_text_input", "action_id": "a",
                              "max_length": 3001}}]},
     "/view/blocks/0/element/max_length"),
    ({"blocks": [{"type": "input", "element": {"type": "plain_text_input",
                                               "action_id": "a"}}]},
     "/view/blocks/0/label"),
])
async def test_views_open_validates_the_view(
    slack: FakeSlack, client: AsyncWebClient, overrides: dict[str, Any], pointer: str
) -> None:
    trigger = slack.issue_trigger_id(user="U1")
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id=trigger, view=_modal(**overrides))
    assert e.value.response["error"] == "invalid_arguments"
    assert e.value.response["response_metadata"]["messages"][0].endswith(
        f"[json-pointer:{pointer}]")
    # the refused view did not use the trigger up
    assert (await client.views_open(trigger_id=trigger, view=_modal()))["ok"]


async def test_view_submission_payload(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U1", "alice")
    trigger = slack.issue_trigger_id(user="U1")
    blocks = [*_modal()["blocks"],
              {"type": "input", "label": {"type": "plain_text", "text": "Why"},
               "element": {"type": "plain_text_input", "action_id": "w"}}]
    view = (await client.views_open(trigger_id=trigger, view=_modal(blocks=blocks)))["view"]
    payload = slack.view_submission(view["id"], values={"a": "fixed it"})
    assert payload["type"] == "view_submission"
    assert payload["user"] == {"id": "U1", "username": "alice", "name": "alice",
                               "team_id": "T0001"}
    assert payload["team"]["id"] == "T0001" and payload["api_app_id"] == "A0001"
    assert payload["trigger_id"] in slack.triggers and payload["trigger_id"] != trigger
    submitted = payload["view"]
    assert submitted["id"] == view["id"] and submitted["callback_id"] == "cb"
    assert submitted["private_metadata"] == "{}"
    generated = view["blocks"][1]["block_id"]  # Slack names a block that had no block_id
    assert submitted["state"]["values"] == {
        "b": {"a": {"type": "plain_text_input", "value": "fixed it"}},
        generated: {"w": {"type": "plain_text_input", "value": None}},
    }
    assert slack.view_submission(view["id"], values={}, user="U2")["user"]["id"] == "U2"
    with pytest.raises(ValueError, match="no inputs"):
        slack.view_submission(view["id"], values={"nope": "x"})


async def test_wait_for_calls(slack: FakeSlack, client: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)  # the calls come after wait_for_calls started waiting
        await client.chat_postMessage(channel="C1", thread_ts="1.5", text="a")
        await client.chat_postMessage(channel="C2", text="b")

    task = asyncio.create_task(later())
    calls = await slack.wait_for_calls("chat.postMessage", 1, timeout=2, channel="C2")
    assert calls[0].params["text"] == "b"
    await task
    with pytest.raises(AssertionError, match=r"chat\.postMessage"):
        await slack.wait_for_calls("chat.postMessage", 3, timeout=0.1)


async def test_streaming(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", user="U1", text="<@UBOT> q")
    with pytest.raises(SlackApiError) as e:
        await client.chat_startStream(channel="C1", thread_ts=parent)
    assert e.value.response["error"] == "missing_recipient_team_id"

    streamer = await client.chat_stream(
        channel="C1",
        thread_ts=parent,
        recipient_team_id="T0001",
        recipient_user_id="U1",
        buffer_size=10,
    )
    await streamer.append(markdown_text="Hello, this is ")
    await streamer.append(markdown_text="a streamed answer.")
    await streamer.stop()
    [msg] = slack.bot_replies("C1", parent)
    assert msg["text"] == "Hello, this is a streamed answer."
    assert not msg["streaming"]
    assert [c.ok for c in slack.calls_to("chat.startStream")] == [False, True]
    with pytest.raises(SlackApiError) as e:
        await client.chat_stopStream(channel="C1", ts=msg["ts"])
    assert e.value.response["error"] == "message_not_in_streaming_state"

    await client.assistant_threads_setStatus(
        channel_id="C1", thread_ts=parent, status="is thinking..."
    )
    assert slack.status_history("C1", parent) == ["is thinking..."]


async def test_file_upload(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message("C1", user="U1", text="q")
    resp = await client.files_upload_v2(
        channel="C1",
        thread_ts=parent,
        content="a,b\n1,2\n",
        filename="cost_report.csv",
        title="Cost report",
    )
    assert resp["file"]["title"] == "Cost report"
    [f] = slack.uploaded_files
    assert (f.filename, f.title, f.content) == ("cost_report.csv", "Cost report", b"a,b\n1,2\n")
    assert (f.channel_id, f.thread_ts) == ("C1", parent)
    [share] = slack.bot_replies("C1", parent)
    assert share["files"][0]["id"] == f.id


async def test_socket_mode(slack: FakeSlack) -> None:
    web = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    received: list[dict[str, Any]] = []

    async def listener(client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        received.append(req.payload)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token="xapp-test-token", web_client=web, ping_interval=30)
    sm.socket_mode_request_listeners.append(listener)
    try:
        await sm.connect()
        await slack.wait_socket_connected(timeout=5)
        payload = ev.envelope(ev.app_mention(channel="C1", user="U1", text="<@UBOT> hi"))
        envelope_id = await slack.push_event(payload)
        await slack.wait_for_ack(envelope_id, timeout=5)
        assert received == [payload]
    finally:
        await sm.close()


# ---------------------------------------------------------------- events & signing


def test_sign_matches_slack_sdk() -> None:
    payload = ev.envelope(ev.app_mention(channel="C1", user="U1", text="<@UBOT> hi"))
    body = json.dumps(payload).encode()
    headers = ev.sign(body, SECRET)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, headers)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    old = ev.sign(body, SECRET, timestamp=int(time.time()) - 301)
    assert not verifier.is_valid_request(body, old)
    assert not SignatureVerifier("other").is_valid_request(body, headers)


def test_event_builders() -> None:
    mention = ev.app_mention(channel="C1", user="U1", text="<@UBOT> hi", thread_ts="1.000001")
    assert mention["type"] == "app_mention" and "channel_type" not in mention
    assert mention["event_ts"] == mention["ts"] and mention["thread_ts"] == "1.000001"
    elements = mention["blocks"][0]["elements"][0]["elements"]
    assert elements[0] == {"type": "user", "user_id": "UBOT"}

    msg = ev.message(channel="C1", user="U1", text="x", thread_ts=mention["ts"])
    assert msg["channel_type"] == "channel" and "subtype" not in msg
    assert float(msg["ts"]) > float(mention["ts"])

    env = ev.envelope(msg)
    assert env["type"] == "event_callback" and env["event"] is msg
    assert env["event_id"].startswith("Ev0") and len(env["event_id"]) == 13
    assert env["authorizations"][0]["user_id"] == "UBOT"
    assert ev.envelope(msg)["event_id"] != env["event_id"]

    changed = ev.message_changed(channel="C1", ts=msg["ts"], user="U1", text="y")
    assert changed["subtype"] == "message_changed" and changed["message"]["text"] == "y"
    deleted = ev.message_deleted(channel="C1", deleted_ts=msg["ts"], user="U1")
    assert deleted["deleted_ts"] == msg["ts"]
    assert ev.channel_join(channel="C1", user="UBOT")["subtype"] == "channel_join"
    assert ev.bot_message(channel="C1", text="beep")["bot_id"] == "BOTHER"
    assert ev.url_verification("abc") == {
        "token": "legacy-verification-token",
        "challenge": "abc",
        "type": "url_verification",
    }
    stamps = [ev.next_ts() for _ in range(100)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 100


async def test_send_event_is_signed() -> None:
    from aiohttp import web

    seen: list[tuple[bool, str | None]] = []
    verifier = SignatureVerifier(SECRET)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verifier.is_valid_request(body, dict(request.headers))
        seen.append((ok, request.headers.get("X-Slack-Retry-Num")))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # a port of the system's choosing: no race
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            url = f"http://127.0.0.1:{port}/slack/events"
            payload = ev.envelope(ev.app_mention(channel="C1", user="U1", text="hi"))
            r = await ev.send_event(http, url, payload, secret=SECRET)
            assert r.status_code == 200
            await ev.send_event(http, url, payload, secret=SECRET, retry_num=1)
    finally:
        await runner.cleanup()
    assert seen == [(True, None), (True, "1")]

"""Self-tests of the fake Slack's workspaces: OAuth installs (``oauth.v2.access`` through a
real slack_sdk client), token rotation and expiry, uninstalls, Enterprise Grid org-wide
installs, and what each installation's token can see (channels, users, files, Slack
Connect)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack

CLIENT_ID = "111.222"
CLIENT_SECRET = "fake-client-secret"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_team("T0002", "Second Team")
        fake.add_team("T0101", "Acme Sales", enterprise_id="E0100", enterprise_name="Acme")
        fake.add_team("T0102", "Acme Support", enterprise_id="E0100")
        yield fake


def web(slack: FakeSlack, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=slack.base_url)


async def exchange(slack: FakeSlack, code: str, **kwargs: Any) -> dict[str, Any]:
    """``oauth.v2.access`` as slack_sdk (and so Bolt's OAuth flow) calls it: HTTP Basic."""
    resp = await web(slack).oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, **kwargs
    )
    return dict(resp.data)  # type: ignore[arg-type]


async def install(slack: FakeSlack, team_id: str, user_id: str = "U_ADMIN") -> str:
    return str((await exchange(slack, slack.authorize(team_id=team_id, user_id=user_id)))
               ["access_token"])


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as e:
        await call
    return str(e.value.response["error"])


# ---------------------------------------------------------------- install


async def test_install_through_oauth(slack: FakeSlack) -> None:
    code = slack.authorize(team_id="T0002", user_id="U_ADMIN")
    body = await exchange(slack, code)
    token = body["access_token"]
    assert token.startswith("xoxb-T0002-")
    assert body == {
        "ok": True,
        "app_id": "A0001",
        "authed_user": {"id": "U_ADMIN"},
        "scope": ",".join(slack.scopes),
        "token_type": "bot",
        "access_token": token,
        "bot_user_id": "UBT0002",
        "team": {"id": "T0002", "name": "Second Team"},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    call = slack.calls_to("oauth.v2.access")[0]
    assert call.headers["Authorization"].startswith("Basic ") and call.token == ""

    me = await web(slack, token).auth_test()
    assert (me["team_id"], me["team"], me["user_id"], me["bot_id"]) == (
        "T0002", "Second Team", "UBT0002", "BBT0002")
    assert me["url"] == "https://second-team.slack.com/" and me["is_enterprise_install"] is False
    assert me.headers["x-oauth-scopes"] == ",".join(slack.scopes)
    assert slack.calls_to("auth.test")[-1].token == token
    inst = slack.installation(team_id="T0002")
    assert inst is not None and inst.active and slack.tokens_of(inst, "bot") == [token]

    # The default workspace and its token are as before.
    default = await web(slack, slack.bot_token).auth_test()
    assert (default["team_id"], default["user_id"], default["bot_id"]) == ("T0001", "UBOT", "BBOT")
    assert default["url"] == "https://fake-test.slack.com/"


async def test_user_scopes_get_a_user_token(slack: FakeSlack) -> None:
    code = slack.authorize(team_id="T0002", user_id="U_ADMIN", scopes=["chat:write"],
                           user_scopes=["search:read"])
    body = await exchange(slack, code)
    assert body["scope"] == "chat:write"
    user = body["authed_user"]
    assert (user["id"], user["scope"], user["token_type"]) == ("U_ADMIN", "search:read", "user")
    me = await web(slack, user["access_token"]).auth_test()
    assert me["user_id"] == "U_ADMIN" and "bot_id" not in me
    assert me.headers["x-oauth-scopes"] == "search:read"


async def test_client_credentials(slack: FakeSlack) -> None:
    # As form parameters, the way Slack's page allows but discourages.
    code = slack.authorize(team_id="T0002", user_id="U_ADMIN")
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.post(slack.base_url + "oauth.v2.access",
                            data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                  "code": code})
    assert r.json()["ok"] is True and r.json()["team"]["id"] == "T0002"

    code = slack.authorize(team_id="T0002", user_id="U_ADMIN")
    assert await error_of(web(slack).oauth_v2_access(
        client_id="999.999", client_secret=CLIENT_SECRET, code=code)) == "invalid_client_id"
    assert await error_of(web(slack).oauth_v2_access(
        client_id=CLIENT_ID, client_secret="wrong", code=code)) == "bad_client_secret"
    assert await error_of(web(slack).oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code,
        grant_type="password")) == "invalid_grant_type"
    # The refusals above did not spend the code.
    assert (await exchange(slack, code))["ok"] is True


async def test_a_code_is_good_once_and_for_ten_minutes(slack: FakeSlack) -> None:
    code = slack.authorize(team_id="T0002", user_id="U_ADMIN")
    await exchange(slack, code)
    assert await error_of(exchange(slack, code)) == "code_already_used"
    assert await error_of(exchange(slack, "123.456.nope")) == "invalid_code"

    late = slack.authorize(team_id="T0002", user_id="U_ADMIN")
    slack.advance_clock(601)
    assert await error_of(exchange(slack, late)) == "invalid_code"

    with_redirect = slack.authorize(team_id="T0002", user_id="U_ADMIN",
                                    redirect_uri="https://app.example/slack/oauth_redirect")
    assert await error_of(exchange(slack, with_redirect,
                                   redirect_uri="https://evil.example/")) == "bad_redirect_uri"
    assert await error_of(exchange(slack, with_redirect)) == "code_already_used"


# ---------------------------------------------------------------- rotation and expiry


async def test_token_rotation() -> None:
    async with FakeSlack(token_rotation=True) as slack:
        slack.add_team("T0002", "Second Team")
        body = await exchange(slack, slack.authorize(team_id="T0002", user_id="U_ADMIN"))
        first, refresh = body["access_token"], body["refresh_token"]
        assert first.startswith("xoxe.xoxb-1-") and refresh.startswith("xoxe-1-")
        assert body["expires_in"] == 43_200
        assert (await web(slack, first).auth_test())["expires_in"] <= 43_200

        renewed = dict((await web(slack).oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="refresh_token",
            refresh_token=refresh)).data)  # type: ignore[arg-type]
        second, refresh2 = renewed["access_token"], renewed["refresh_token"]
        assert {second, refresh2}.isdisjoint({first, refresh})
        assert (renewed["token_type"], renewed["bot_user_id"], renewed["team"]["id"],
                renewed["expires_in"]) == ("bot", "UBT0002", "T0002", 43_200)
        assert "authed_user" not in renewed
        # Refreshing does not end the old access token: it runs until it expires.
        assert (await web(slack, first).auth_test())["user_id"] == "UBT0002"
        assert (await web(slack, second).auth_test())["user_id"] == "UBT0002"

        # A used refresh token still works for a short grace period, then never again.
        async def refresh_with(value: str) -> dict[str, Any]:
            resp = await web(slack).oauth_v2_access(
                client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                grant_type="refresh_token", refresh_token=value)
            return dict(resp.data)  # type: ignore[arg-type]

        third = (await refresh_with(refresh))["access_token"]
        # At most two live access tokens per installation: the oldest is revoked.
        assert await error_of(web(slack, first).auth_test()) == "token_revoked"
        assert (await web(slack, third).auth_test())["ok"] is True
        slack.advance_clock(61)
        assert await error_of(refresh_with(refresh)) == "invalid_refresh_token"
        assert await error_of(refresh_with("xoxe-1-unknown")) == "invalid_refresh_token"

        slack.advance_clock(43_200)
        assert await error_of(web(slack, second).auth_test()) == "token_expired"
        assert await error_of(web(slack, second).chat_postMessage(
            channel="C1", text="hi")) == "token_expired"
        fresh = (await refresh_with(refresh2))["access_token"]
        assert (await web(slack, fresh).auth_test())["ok"] is True
        # The default workspace's long-lived token never expires.
        assert (await web(slack, slack.bot_token).auth_test())["ok"] is True


async def test_expire_token(slack: FakeSlack) -> None:
    token = await install(slack, "T0002")
    slack.expire_token(token)
    assert await error_of(web(slack, token).auth_test()) == "token_expired"
    assert slack.calls_to("auth.test")[-1].token == token


# ---------------------------------------------------------------- uninstall


async def test_uninstall_revokes_that_installation(slack: FakeSlack) -> None:
    token = await install(slack, "T0002")
    slack.add_channel("C2", "second-general", teams=["T0002"])
    await web(slack, token).chat_postMessage(channel="C2", text="hello")
    inst = slack.uninstall(team_id="T0002")
    assert not inst.active
    assert await error_of(web(slack, token).chat_postMessage(
        channel="C2", text="again")) == "token_revoked"
    assert [c.token for c in slack.calls_to("chat.postMessage")] == [token, token]
    assert (await web(slack, slack.bot_token).auth_test())["ok"] is True
    assert await error_of(web(slack, "xoxb-never-issued").auth_test()) == "invalid_auth"

    # Installing again: a new token, the same bot.
    again = await install(slack, "T0002")
    assert again != token
    me = await web(slack, again).auth_test()
    assert (me["user_id"], me["bot_id"]) == ("UBT0002", "BBT0002")
    assert await error_of(web(slack, token).auth_test()) == "token_revoked"


def test_lifecycle_event_builders() -> None:
    gone = ev.app_uninstalled_event(team_id="T0002", event_id="Ev1", event_time=5)
    assert gone == {
        "token": "legacy-verification-token",
        "team_id": "T0002",
        "api_app_id": "A0001",
        "event": {"type": "app_uninstalled"},
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": 5,
    }
    revoked = ev.tokens_revoked_event(team_id="T0002", bot=["UBT0002"], oauth=["U_ADMIN"],
                                      enterprise_id="E0100")
    assert revoked["event"] == {"type": "tokens_revoked",
                                "tokens": {"oauth": ["U_ADMIN"], "bot": ["UBT0002"]}}
    assert revoked["enterprise_id"] == "E0100" and revoked["type"] == "event_callback"


def test_envelope_names_the_installation() -> None:
    default = ev.envelope({"type": "message"})
    assert "enterprise_id" not in default
    assert (default["context_team_id"], default["context_enterprise_id"]) == ("T0001", None)
    assert default["authorizations"] == [{"enterprise_id": None, "team_id": "T0001",
                                          "user_id": "UBOT", "is_bot": True,
                                          "is_enterprise_install": False}]
    org = ev.authorization(team_id="T0101", user_id="WBE0100", enterprise_id="E0100",
                           is_enterprise_install=True)
    shared = ev.envelope({"type": "message"}, team_id="T0101", enterprise_id="E0100",
                         context_team_id="T0002", context_enterprise_id=None,
                         is_ext_shared_channel=True, authorizations=[org])
    assert (shared["team_id"], shared["enterprise_id"]) == ("T0101", "E0100")
    assert (shared["context_team_id"], shared["context_enterprise_id"]) == ("T0002", None)
    assert shared["is_ext_shared_channel"] is True and shared["authorizations"] == [org]


# ---------------------------------------------------------------- what each token sees


async def test_another_workspace_cannot_see_the_channel(slack: FakeSlack) -> None:
    token = await install(slack, "T0002")
    other = web(slack, token)
    slack.add_user("U_ALICE", "alice")
    parent = slack.add_message("C1", user="U_ALICE", text="<@UBOT> question")
    for call in (
        other.chat_postMessage(channel="C1", text="hi"),
        other.conversations_replies(channel="C1", ts=parent),
        other.conversations_info(channel="C1"),
        other.reactions_add(channel="C1", timestamp=parent, name="eyes"),
        other.assistant_threads_setStatus(channel_id="C1", thread_ts=parent, status="x"),
    ):
        assert await error_of(call) == "channel_not_found"
    assert await error_of(other.users_info(user="U_ALICE")) == "user_not_found"
    assert slack.messages["C1"] == [slack.get_message("C1", parent)]
    # The default workspace's own token still sees its channel.
    posted = await web(slack, slack.bot_token).chat_postMessage(channel="C1", text="ok",
                                                               thread_ts=parent)
    assert posted["message"]["bot_id"] == "BBOT"

    slack.add_channel("C2", "second-general", teams=["T0002"])
    await other.chat_postMessage(channel="C2", text="hello")
    assert await error_of(web(slack, slack.bot_token).conversations_history(
        channel="C2")) == "channel_not_found"


async def test_slack_connect_channel_is_seen_by_both(slack: FakeSlack) -> None:
    token = await install(slack, "T0002")
    info = slack.add_channel("CSHARED", "shared", teams=["T0001", "T0002"])
    assert (info["is_shared"], info["is_ext_shared"]) == (True, True)
    slack.add_user("U_BOB", "bob", team_id="T0002")
    root = slack.add_message("CSHARED", user="U_BOB", text="<@UBT0002> hi")

    ours = await web(slack, slack.bot_token).chat_postMessage(
        channel="CSHARED", thread_ts=root, text="from T0001")
    theirs = await web(slack, token).chat_postMessage(
        channel="CSHARED", thread_ts=root, text="from T0002")
    assert (theirs["message"]["bot_id"], theirs["message"]["user"],
            theirs["message"]["team"]) == ("BBT0002", "UBT0002", "T0002")
    assert [m["ts"] for m in slack.bot_replies("CSHARED", root)] == [ours["ts"]]
    assert [m["text"] for m in slack.bot_replies("CSHARED", root, bot_id="BBT0002")] == [
        "from T0002"]
    # Each bot edits its own messages only.
    assert await error_of(web(slack, token).chat_update(
        channel="CSHARED", ts=ours["ts"], text="x")) == "cant_update_message"

    seen = await web(slack, token).conversations_info(channel="CSHARED")
    assert seen["channel"]["context_team_id"] == "T0002"
    # Members of a shared channel are visible across it.
    assert (await web(slack, slack.bot_token).users_info(user="U_BOB"))["user"]["team_id"] == (
        "T0002")
    slack.add_user("U_CAROL", "carol", team_id="T0101")
    assert await error_of(web(slack, token).users_info(user="U_CAROL")) == "user_not_found"


async def test_org_wide_install(slack: FakeSlack) -> None:
    code = slack.authorize(enterprise_id="E0100", user_id="W_ADMIN", org_wide=True)
    body = await exchange(slack, code)
    assert (body["team"], body["enterprise"], body["is_enterprise_install"]) == (
        None, {"id": "E0100", "name": "Acme"}, True)
    assert body["bot_user_id"] == "WBE0100"
    token = body["access_token"]
    me = await web(slack, token).auth_test()
    assert (me["team_id"], me["team"], me["enterprise_id"], me["is_enterprise_install"]) == (
        "E0100", "Acme", "E0100", True)
    assert me["url"] == "https://acme.enterprise.slack.com/"

    slack.add_channel("CSALES", "sales", teams=["T0101"])
    slack.add_channel("CSUPPORT", "support", teams=["T0102"])
    for channel, team in (("CSALES", "T0101"), ("CSUPPORT", "T0102")):
        posted = await web(slack, token).chat_postMessage(channel=channel, text="hi")
        assert posted["message"]["team"] == team
    assert await error_of(web(slack, token).chat_postMessage(
        channel="C1", text="hi")) == "channel_not_found"
    slack.add_user("U_DAN", "dan", team_id="T0102")
    assert (await web(slack, token).users_info(user="U_DAN"))["user"]["name"] == "dan"

    # A workspace of that org cannot install the app on its own while the org has it.
    code = slack.authorize(team_id="T0101", user_id="U_ADMIN")
    assert await error_of(exchange(slack, code)) == "cannot_install_an_org_installed_app"
    slack.uninstall(enterprise_id="E0100")
    assert await error_of(web(slack, token).auth_test()) == "token_revoked"


async def test_workspace_install_inside_an_org(slack: FakeSlack) -> None:
    body = await exchange(slack, slack.authorize(team_id="T0101", user_id="U_ADMIN"))
    assert (body["team"], body["enterprise"], body["is_enterprise_install"]) == (
        {"id": "T0101", "name": "Acme Sales"}, {"id": "E0100", "name": "Acme"}, False)
    me = await web(slack, body["access_token"]).auth_test()
    assert (me["team_id"], me["enterprise_id"]) == ("T0101", "E0100")
    # Only its own workspace: not its sister's channels.
    slack.add_channel("CSUPPORT", "support", teams=["T0102"])
    assert await error_of(web(slack, body["access_token"]).chat_postMessage(
        channel="CSUPPORT", text="hi")) == "channel_not_found"


async def test_files_download_with_a_token_that_sees_them(slack: FakeSlack) -> None:
    token = await install(slack, "T0002")
    ours = slack.add_file("F1", "a.csv", "text/csv", b"a,b\n")
    slack.add_channel("CSHARED", "shared", teams=["T0001", "T0002"])
    shared = slack.add_file("F2", "b.csv", "text/csv", b"c,d\n", channel="CSHARED")
    theirs = slack.add_file("F3", "c.csv", "text/csv", b"e,f\n", team_id="T0002")

    async with httpx.AsyncClient(trust_env=False) as http:
        async def get(file: dict[str, Any], with_token: str) -> httpx.Response:
            return await http.get(file["url_private_download"],
                                  headers={"Authorization": f"Bearer {with_token}"})

        assert (await get(ours, slack.bot_token)).content == b"a,b\n"
        assert (await get(ours, token)).status_code == 302
        assert (await get(shared, token)).content == b"c,d\n"
        assert (await get(shared, slack.bot_token)).content == b"c,d\n"
        assert (await get(theirs, token)).content == b"e,f\n"
        assert (await get(theirs, slack.bot_token)).status_code == 302
    assert [c.token for c in slack.calls_to("download")][:2] == [slack.bot_token, token]


async def test_call_token_is_recorded(slack: FakeSlack) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        await http.post(slack.base_url + "auth.test")
        await http.post(slack.base_url + "auth.test", data={"token": "xoxb-wrong"})
    assert [(c.token, c.error) for c in slack.calls_to("auth.test")] == [
        ("", "not_authed"), ("xoxb-wrong", "invalid_auth")]
    assert "token" not in slack.calls_to("auth.test")[1].params

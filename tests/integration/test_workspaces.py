"""One deployment, many workspaces (docs/distribute.md), with `python -m bot serve` as a
distributable app against the fake Slack playing several workspaces and an Enterprise Grid
org: installs through the real OAuth redirect flow, each workspace answered with its own
token and only that one, forged and replayed states refused, a rotating token refreshed,
an uninstall in the middle of a turn, a Slack Connect channel answered once, and the
`installs` commands."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.slack.scopes import REQUIRED_SCOPES
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import SIGNING_SECRET, BotProcess
from tests.integration.installs import (
    ENCRYPTION_KEY,
    SECOND_KEY,
    browser,
    distributed_settings,
    install,
    open_install_page,
    redirect,
)
from tests.integration.redis_server import RedisServer
from tests.integration.test_cli import SETTING_VARS, run_cli
from tests.unit.test_feedback import block_actions
from tests.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]

# Workspaces: Alpha and Beta are organisations of their own; Gamma and Delta are the two
# workspaces of the Enterprise Grid org E1, which installs the app org-wide.
TEAMS = {"TA": "Alpha", "TB": "Beta", "TG": "Gamma", "TD": "Delta"}
ORG = "E1"
PEOPLE = {"TA": ("UA1", "Ann"), "TB": ("UB1", "Ben"), "TG": ("UG1", "Gus"),
          "TD": ("UD1", "Dee")}
CHANNELS = {"TA": "CA", "TB": "CB", "TG": "CG", "TD": "CD"}
SHARED = "CS"  # a Slack Connect channel of Alpha and Beta


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    for team, name in TEAMS.items():
        fake.add_team(team, name, enterprise_id=ORG if team in ("TG", "TD") else None,
                      enterprise_name="Initech" if team in ("TG", "TD") else None)
        user, person = PEOPLE[team]
        fake.add_user(user, person.lower(), real_name=person, display_name=person,
                      team_id=team)
        fake.add_channel(CHANNELS[team], f"finops-{name.lower()}", teams=[team])
    fake.add_channel(SHARED, "shared-finops", teams=["TA", "TB"])
    yield fake
    await fake.stop()


@pytest.fixture
async def app(slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
              ) -> AsyncIterator[BotProcess]:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **distributed_settings(slack))
    await bot.start()
    try:
        yield bot
    finally:
        await bot.close()


def bot_user(installation: Any) -> str:
    return str(installation.bot_user_id)


def authorization(installation: Any) -> dict[str, Any]:
    return ev.authorization(team_id=installation.team_id, user_id=bot_user(installation),
                            enterprise_id=installation.enterprise_id,
                            is_enterprise_install=installation.is_enterprise_install)


async def ask(bot: BotProcess, slack: FakeSlack, installation: Any, *, team: str,
              channel: str, user: str, text: str, thread_ts: str | None = None,
              shared: bool = False, files: list[dict[str, Any]] | None = None) -> str:
    """A mention in `channel` of workspace `team`, delivered through `installation`
    (its two events, as Slack sends a mention); returns its ts."""
    mention = f"<@{bot_user(installation)}> {text}"
    ts = slack.add_message(channel, user=user, text=mention, thread_ts=thread_ts)
    enterprise = installation.enterprise_id
    for event in (ev.app_mention(channel=channel, user=user, text=mention, ts=ts,
                                 thread_ts=thread_ts),
                  ev.message(channel=channel, user=user, text=mention, ts=ts,
                             thread_ts=thread_ts, channel_type="channel")):
        event["team"] = team
        if files is not None:
            event["files"] = files
        payload = ev.envelope(event, team_id=team, enterprise_id=enterprise,
                              authorizations=[authorization(installation)],
                              is_ext_shared_channel=shared)
        response = await bot.send(payload)
        assert response.status_code == 200, response.text
    return ts


def answers(slack: FakeSlack, channel: str, ts: str) -> list[str]:
    """What any installation's bot posted in the thread."""
    return [message_text(m) for m in slack.thread_messages(channel, ts)
            if m["ts"] != ts and m.get("bot_id")]


async def answered(slack: FakeSlack, channel: str, ts: str, n: int = 1) -> list[str]:
    return await eventually(lambda: (found := answers(slack, channel, ts)) and len(found) >= n
                            and found, timeout=30, what=lambda: slack.summary())


def tokens_used(slack: FakeSlack, channel: str) -> set[str]:
    """The tokens of every Web API call the bot made about `channel`."""
    return {c.token for c in slack.calls
            if (c.params.get("channel") or c.params.get("channel_id")) == channel}


async def test_three_workspaces_install_and_each_is_answered_with_its_own_token(
    slack: FakeSlack, app: BotProcess,
) -> None:
    alpha = await install(app, slack, user="UA1", team_id="TA")
    beta = await install(app, slack, user="UB1", team_id="TB")
    org = await install(app, slack, user="UG1", enterprise_id=ORG, org_wide=True)
    token = {name: slack.tokens_of(inst, "bot")[-1]
             for name, inst in (("TA", alpha), ("TB", beta), ("E1", org))}
    assert len(set(token.values())) == 3
    cases = [("TA", alpha, "TA"), ("TB", beta, "TB"), ("TG", org, "E1"), ("TD", org, "E1")]
    for team, installation, _ in cases:
        user, person = PEOPLE[team]
        ts = await ask(app, slack, installation, team=team, channel=CHANNELS[team],
                       user=user, text=f"spend of {team}?")
        [answer] = await answered(slack, CHANNELS[team], ts)
        assert f"said={person}: spend of {team}?" in answer
    await app.wait_idle()
    for team, _, owner in cases:
        assert tokens_used(slack, CHANNELS[team]) == {token[owner]}, team
    # Each answer's thread is its installation's: the workspace, or the org.
    for team, _, owner in cases:
        assert any(record.get("thread_key", "").startswith(f"{owner}:{CHANNELS[team]}:")
                   for record in app.log_records()), team
    assert "xoxb" not in app.log() and "xoxe" not in app.log()  # no token in the logs
    metrics = (await app.http.get(f"{app.url}/metrics")).text
    for owner, count in (("TA", 1), ("TB", 1), ("E1", 2)):
        line = (f'slackbot_workspace_turns_total{{outcome="answered",workspace="{owner}"}} '
                f"{count:.1f}")
        assert line in metrics.splitlines(), line


async def test_a_forged_replayed_or_expired_state_is_refused(
    slack: FakeSlack, app: BotProcess, real_redis: Any,
) -> None:
    page = await open_install_page(app)
    code = slack.authorize(team_id="TA", user_id="UA1", scopes=page.scopes)
    forged = secrets.token_hex(16)
    other = await open_install_page(app)  # another install, begun in another browser
    for state, cookie in ((forged, f"slack-app-oauth-state={forged}"),  # never issued
                          (forged, None),
                          (page.state, other.cookie),  # the browser began another one
                          ("", page.cookie)):
        refused = await redirect(app, code=code, state=state, cookie=cookie)
        assert refused.status_code in (400, 401), refused.status_code
        assert "Something Went Wrong" in refused.text
        assert slack.installation(team_id="TA") is None
    ok = await redirect(app, code=code, state=page.state, cookie=page.cookie)
    assert ok.status_code == 200, ok.text
    assert slack.installation(team_id="TA") is not None
    # The same redirect again, with or without the cookie: the state was used up.
    for cookie in (page.cookie, None):
        code_again = slack.authorize(team_id="TA", user_id="UA1", scopes=page.scopes)
        replayed = await redirect(app, code=code_again, state=page.state, cookie=cookie)
        assert replayed.status_code == 401, replayed.status_code
    assert len(slack.tokens_of(slack.installation(team_id="TA"), "bot")) == 1
    # An expired state: refused too.
    late = await open_install_page(app)
    await real_redis.pexpire(f"{app.prefix}:oauth:state:{late.state}", 1)
    await eventually(lambda: _gone(real_redis, f"{app.prefix}:oauth:state:{late.state}"))
    code_late = slack.authorize(team_id="TB", user_id="UB1", scopes=late.scopes)
    expired = await redirect(app, code=code_late, state=late.state, cookie=late.cookie)
    assert expired.status_code == 401 and slack.installation(team_id="TB") is None
    # A client that keeps no cookies installs with a valid state alone.
    bare = await open_install_page(app)
    code_bare = slack.authorize(team_id="TB", user_id="UB1", scopes=bare.scopes)
    accepted = await redirect(app, code=code_bare, state=bare.state, cookie=None)
    assert accepted.status_code == 200 and slack.installation(team_id="TB") is not None


async def _gone(client: Any, key: str) -> bool:
    return bool(await client.exists(key) == 0)


async def test_an_expiring_token_is_refreshed_and_the_new_one_used(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object,
) -> None:
    slack.workspaces.token_rotation = True
    slack.workspaces.token_lifetime = 3600  # within TOKEN_REFRESH_MINUTES (120) at once
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **distributed_settings(slack))
    await bot.start()
    try:
        alpha = await install(bot, slack, user="UA1", team_id="TA")
        [issued] = slack.tokens_of(alpha, "bot")
        ts = await ask(bot, slack, alpha, team="TA", channel="CA", user="UA1",
                       text="after the refresh")
        [answer] = await answered(slack, "CA", ts)
        assert "said=Ann: after the refresh" in answer
        await bot.wait_idle()
        refreshes = [c for c in slack.calls_to("oauth.v2.access")
                     if c.params.get("grant_type") == "refresh_token"]
        assert len(refreshes) == 1
        fresh = slack.tokens_of(alpha, "bot")[-1]
        assert fresh != issued
        assert tokens_used(slack, "CA") == {fresh}
        slack.expire_token(issued)
        again = await ask(bot, slack, alpha, team="TA", channel="CA", user="UA1",
                          text="once more", thread_ts=ts)
        await answered(slack, "CA", ts, 2)
        assert tokens_used(slack, "CA") == {fresh}
        assert again
    finally:
        await bot.close()


async def test_an_uninstall_mid_turn_posts_nothing_afterwards(
    slack: FakeSlack, app: BotProcess,
) -> None:
    beta = await install(app, slack, user="UB1", team_id="TB")
    ts = await ask(app, slack, beta, team="TB", channel="CB", user="UB1",
                   text="a slow one sleep=3")
    queued = await ask(app, slack, beta, team="TB", channel="CB", user="UB1",
                       text="queued behind it", thread_ts=ts)
    await app.wait_log(lambda r: r.get("message") == "event queued" and r.get("ts") == queued)
    # The turn runs (its status is set) when the app is uninstalled.
    await eventually(lambda: slack.status_history("CB", ts), timeout=15)
    slack.uninstall(team_id="TB")
    response = await app.send(ev.app_uninstalled_event(team_id="TB"))
    assert response.status_code == 200
    uninstalled_at = slack.calls[-1].at
    for turn_ts in (ts, queued):
        record = await app.wait_log(lambda r, t=turn_ts: r.get("ts") == t
                                    and r.get("outcome") == "unreachable", timeout=30)
        assert record["thread_key"].startswith("TB:CB:")
    await app.wait_idle()
    posted = [c for c in slack.calls if c.at > uninstalled_at and c.ok
              and c.method.startswith(("chat.", "files."))]
    assert posted == []
    assert answers(slack, "CB", ts) == []
    metrics = (await app.http.get(f"{app.url}/metrics")).text.splitlines()
    assert 'slackbot_workspace_turns_total{outcome="unreachable",workspace="TB"} 2.0' in metrics
    # The workspace is gone from the installations, and listed as uninstalled.
    listing = await run_installs(app, "list")
    assert "TB" in listing.stdout.split("Uninstalled", 1)[1]


async def test_a_slack_connect_channel_is_answered_once_with_the_named_installation(
    slack: FakeSlack, app: BotProcess,
) -> None:
    alpha = await install(app, slack, user="UA1", team_id="TA")
    beta = await install(app, slack, user="UB1", team_id="TB")
    # Ann (Alpha) asks in the channel Alpha shares with Beta; Slack delivers the message
    # once, through Beta's installation.
    ts = await ask(app, slack, beta, team="TA", channel=SHARED, user="UA1",
                   text="shared spend?", shared=True)
    [answer] = await answered(slack, SHARED, ts)
    assert "shared spend?" in answer
    await app.wait_idle()
    assert len(answers(slack, SHARED, ts)) == 1
    assert tokens_used(slack, SHARED) == {slack.tokens_of(beta, "bot")[-1]}
    assert slack.tokens_of(alpha, "bot")[-1] not in tokens_used(slack, SHARED)


async def run_installs(bot: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot installs …` with the bot's own settings (in a thread: the fake Slack
    it may call runs on this loop)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "installs", *args], env=bot.env,
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


async def test_the_installs_commands_never_print_a_token(slack: FakeSlack, app: BotProcess
                                                         ) -> None:
    alpha = await install(app, slack, user="UA1", team_id="TA")
    await install(app, slack, user="UG1", enterprise_id=ORG, org_wide=True)
    [token] = slack.tokens_of(alpha, "bot")
    listing = await run_installs(app, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    [alpha_line] = [line for line in lines if line.split()[:2] == ["TA", "workspace"]]
    assert "Alpha" in alpha_line and alpha_line.split()[-1] == str(len(REQUIRED_SCOPES))
    assert any(line.split()[:2] == [ORG, "org"] and "Initech" in line for line in lines)
    shown = await run_installs(app, "show", "TA")
    assert shown.returncode == 0, shown.stderr
    assert bot_user(alpha) in shown.stdout and "UA1" in shown.stdout
    revoked = await run_installs(app, "revoke", "TA")
    assert revoked.returncode == 0, revoked.stderr
    assert slack.token_info(token).revoked, revoked.stdout
    purge = await run_installs(app, "purge", "TA")
    assert purge.returncode == 0, purge.stderr
    # A workspace of the org-wide install is served: not purged without --force.
    served = await run_installs(app, "purge", "TG")
    assert served.returncode == 1 and "not listed as uninstalled" in served.stderr
    # A new key first, the old one after: every record sealed again under the new one,
    # then read with the new key alone.
    rekey = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "installs", "rekey"],
        env={**app.env, "INSTALLATION_ENCRYPTION_KEY": f"{SECOND_KEY},{ENCRYPTION_KEY}"},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert rekey.returncode == 0 and rekey.stdout.startswith("Sealed "), rekey.stderr
    assert int(rekey.stdout.split()[1]) >= 2  # the org's bot and installer records
    only_new = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "installs", "show", ORG],
        env={**app.env, "INSTALLATION_ENCRYPTION_KEY": SECOND_KEY},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert only_new.returncode == 0 and "org-wide install" in only_new.stdout, only_new.stderr

    for result in (listing, shown, revoked, purge):
        assert token not in result.stdout + result.stderr
        assert "xoxb" not in result.stdout + result.stderr


async def run_doctor(bot: BotProcess, **env: str) -> dict[str, Any]:
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "doctor", "--json"],
        env={**bot.env, **env}, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    report: dict[str, Any] = json.loads(result.stdout)
    return {check["name"]: check for check in report["checks"]} | {"ok": report["ok"]}


async def test_doctor_checks_the_installations_and_their_key(slack: FakeSlack, app: BotProcess
                                                              ) -> None:
    fresh = await run_doctor(app)
    assert fresh["Slack installations"]["status"] == "warning"  # none yet
    assert "/slack/install" in fresh["Slack installations"]["summary"]
    await install(app, slack, user="UA1", team_id="TA")
    report = await run_doctor(app)
    assert report["settings"]["status"] == "ok"
    assert report["Slack installations"]["status"] == "ok"
    assert report["Slack installations"]["summary"].startswith("1 installed")
    assert report["Slack scopes"]["status"] == "ok"
    # Another key cannot open them: a problem naming the workspace.
    other = await run_doctor(app, INSTALLATION_ENCRYPTION_KEY=SECOND_KEY)
    assert other["ok"] is False
    assert other["Slack installations"]["status"] == "problem"
    assert other["Slack installations"]["details"] == ["TA"]
    # A key that is no key at all is a settings problem.
    broken = await run_doctor(app, INSTALLATION_ENCRYPTION_KEY="not-a-key")
    assert broken["settings"]["status"] == "problem"
    assert any("INSTALLATION_ENCRYPTION_KEY" in line for line in broken["settings"]["details"])


async def test_a_feedback_click_is_answered_with_its_workspace_token(
    slack: FakeSlack, app: BotProcess,
) -> None:
    """The clicks Bolt dispatches (feedback, Stop, /adk-reset) get the client of the
    installation Bolt's authorization finds for the click's team."""
    await install(app, slack, user="UA1", team_id="TA")
    beta = await install(app, slack, user="UB1", team_id="TB")
    ts = await ask(app, slack, beta, team="TB", channel="CB", user="UB1", text="rate me")
    await answered(slack, "CB", ts)
    [answer] = [m for m in slack.thread_messages("CB", ts) if m.get("bot_id")]
    [block] = [b for b in answer["blocks"] if b["type"] == "context_actions"]
    payload = block_actions(block, "up", user="UB1", channel="CB", message_ts=answer["ts"],
                            thread_ts=ts)
    payload["team"] = {"id": "TB", "domain": "beta"}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    headers = {**ev.sign(body, SIGNING_SECRET),
               "Content-Type": "application/x-www-form-urlencoded"}
    response = await app.http.post(f"{app.url}/slack/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    [note] = await eventually(lambda: [c for c in slack.calls_to("chat.postEphemeral")
                                       if c.ok], timeout=15)
    assert note.token == slack.tokens_of(beta, "bot")[-1]
    assert note.params["user"] == "UB1" and "Thanks" in str(note.params.get("text"))

    # A 👎 opens the note form with the same token, and its submission is answered with it.
    payload = {**payload, "actions": block_actions(block, "down", user="UB1", channel="CB",
                                                   message_ts=answer["ts"],
                                                   thread_ts=ts)["actions"],
               "trigger_id": slack.issue_trigger_id(user="UB1", team_id="TB")}
    assert (await app.interact(payload)).status_code == 200
    [opened] = await slack.wait_for_calls("views.open", 1, trigger_id=payload["trigger_id"])
    assert opened.ok and opened.token == slack.tokens_of(beta, "bot")[-1]
    [view] = slack.opened_views("feedback_note")
    submitted = await app.interact(slack.view_submission(view["id"],
                                                         values={"correction": "42"}))
    assert submitted.status_code == 200, submitted.text
    kept = await eventually(lambda: [c for c in slack.calls_to("chat.postEphemeral")
                                     if c.ok and "note is saved" in str(c.params["text"])],
                            timeout=15)
    assert kept[0].token == slack.tokens_of(beta, "bot")[-1]
    assert kept[0].params["user"] == "UB1" and kept[0].params["channel"] == "CB"

    # The eval export reads the thread with the workspace's own token to find its people.
    out_dir = app.workdir / "evals"
    env = {k: v for k, v in app.env.items() if k in SETTING_VARS}
    calls = len(slack.calls)
    code, out, err = await run_cli("evals", "export", "--rating", "down", "--out",
                                   str(out_dir), env=env)
    assert (code, err) == (0, ""), out
    assert out.splitlines()[-1] == "1 case: 1 from ADK sessions, 0 from Slack threads; 0 skipped"
    exported = (out_dir / "slack_feedback_down.evalset.json").read_text()
    assert "Ben" not in exported and "UB1" not in exported and '"42"' in exported
    assert {c.token for c in slack.calls[calls:]} == {slack.tokens_of(beta, "bot")[-1]}


async def test_an_attached_file_is_downloaded_with_the_org_token(
    slack: FakeSlack, app: BotProcess,
) -> None:
    org = await install(app, slack, user="UG1", enterprise_id=ORG, org_wide=True)
    csv = slack.add_file("F1", "costs.csv", "text/csv", b"team,usd\ndata,10\n", user="UD1",
                         team_id="TD", channel="CD")
    ts = await ask(app, slack, org, team="TD", channel="CD", user="UD1",
                   text="what is in the file?", files=[csv])
    [answer] = await answered(slack, "CD", ts)
    assert "part: text/csv 17 bytes" in answer
    downloads = slack.calls_to("download")
    assert downloads and {c.token for c in downloads} == {slack.tokens_of(org, "bot")[-1]}


async def test_a_bot_token_wins_over_client_credentials_in_the_environment(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object,
) -> None:
    """SLACK_BOT_TOKEN set: one workspace, as always, whatever SLACK_CLIENT_ID and
    SLACK_CLIENT_SECRET say (Bolt would otherwise start an OAuth flow of its own)."""
    bot = BotProcess(slack, adk.base_url, prefix=prefix,
                     slack_client_id=slack.workspaces.client_id,
                     slack_client_secret=slack.workspaces.client_secret)
    await bot.start()
    try:
        assert (await bot.http.get(f"{bot.url}/slack/install")).status_code == 404
        assert (await bot.http.get(f"{bot.url}/slack/oauth_redirect")).status_code == 404
        text = f"<@{slack.bot_user_id}> one workspace"
        ts = slack.add_message("C1", user="U1", text=text)
        response = await bot.send(ev.envelope(ev.app_mention(channel="C1", user="U1",
                                                             text=text, ts=ts)))
        assert response.status_code == 200
        [answer] = await answered(slack, "C1", ts)
        [message] = [m for m in slack.thread_messages("C1", ts) if m.get("bot_id")]
        [block] = [b for b in message["blocks"] if b["type"] == "context_actions"]
        payload = block_actions(block, "down", user="U1", channel="C1",
                                message_ts=message["ts"], thread_ts=ts)
        payload["team"] = {"id": slack.team_id, "domain": "test"}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        headers = {**ev.sign(body, SIGNING_SECRET),
                   "Content-Type": "application/x-www-form-urlencoded"}
        click = await bot.http.post(f"{bot.url}/slack/events", content=body, headers=headers)
        assert click.status_code == 200, click.text
        [note] = await eventually(lambda: [c for c in slack.calls_to("chat.postEphemeral")
                                           if c.ok], timeout=15)
        assert note.token == slack.bot_token and "one workspace" in answer
    finally:
        await bot.close()


async def test_hostile_redirects_get_a_failure_page_and_install_nothing(
    slack: FakeSlack, app: BotProcess,
) -> None:
    page = await open_install_page(app)
    async with browser() as client:
        for params in ({"error": "<script>alert(1)</script>"},
                       {"code": "x", "state": "s" * 20000},
                       {"code": "x"}, {"state": page.state}, {},
                       {"code": "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
                        "state": page.state}):
            response = await client.get(f"{app.url}/slack/oauth_redirect", params=params)
            assert response.status_code in (200, 400, 401), (params, response.status_code)
            assert "Something Went Wrong" in response.text
            assert "<script>alert" not in response.text
    assert [c for c in slack.calls_to("oauth.v2.access") if c.ok] == []
    assert (await app.http.get(f"{app.url}/healthz")).status_code == 200


async def test_a_wrong_encryption_key_is_refused_at_start(slack: FakeSlack, app: BotProcess
                                                          ) -> None:
    await install(app, slack, user="UA1", team_id="TA")
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "serve"],
        env={**app.env, "INSTALLATION_ENCRYPTION_KEY": SECOND_KEY, "PORT": "0"},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert ("startup error: INSTALLATION_ENCRYPTION_KEY cannot open the stored "
            "installations") in result.stderr
    assert SECOND_KEY not in result.stderr + result.stdout


async def test_the_install_page_says_so_when_redis_is_down(
    slack: FakeSlack, adk: AdkServer, prefix: str,
) -> None:
    redis = RedisServer(persistent=False)
    redis.start()
    bot = BotProcess(slack, adk.base_url, prefix=prefix, redis_url=redis.url,
                     **distributed_settings(slack))
    try:
        await bot.start()
        redis.kill()
        async with browser() as client:
            page = await client.get(f"{bot.url}/slack/install")
        assert page.status_code == 503
        assert "not available right now" in page.text
    finally:
        await bot.close()
        redis.cleanup()


async def test_user_groups_are_looked_up_in_each_workspace(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object,
) -> None:
    """ACCESS_DENIED_USERGROUPS names Alpha's group SA (Ann is in it): Ann is refused in
    Alpha, asked with Alpha's token; in Beta, where SA is not a group, Ben is answered."""
    slack.add_usergroup("SA", ["UA1"], team_id="TA")
    bot = BotProcess(slack, adk.base_url, prefix=prefix, access_denied_usergroups="SA",
                     **distributed_settings(slack))
    await bot.start()
    try:
        alpha = await install(bot, slack, user="UA1", team_id="TA")
        beta = await install(bot, slack, user="UB1", team_id="TB")
        refused_ts = await ask(bot, slack, alpha, team="TA", channel="CA", user="UA1",
                               text="may I?")
        [note] = await eventually(lambda: [c for c in slack.calls_to("chat.postEphemeral")
                                           if c.ok], timeout=15)
        assert note.params["user"] == "UA1" and note.token == slack.tokens_of(alpha, "bot")[-1]
        ts = await ask(bot, slack, beta, team="TB", channel="CB", user="UB1", text="and I?")
        [answer] = await answered(slack, "CB", ts)
        assert "said=Ben: and I?" in answer
        await bot.wait_idle()
        assert answers(slack, "CA", refused_ts) == []
        lookups = {(c.params["usergroup"], c.token, c.error)
                   for c in slack.calls_to("usergroups.users.list")}
        assert lookups == {("SA", slack.tokens_of(alpha, "bot")[-1], None),
                           ("SA", slack.tokens_of(beta, "bot")[-1], "no_such_subteam")}
    finally:
        await bot.close()


async def test_socket_mode_serves_the_installed_workspaces(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object,
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, slack_app_token=slack.app_token,
                     **distributed_settings(slack))
    await bot.start()
    try:
        await slack.wait_socket_connected(timeout=15)
        beta = await install(bot, slack, user="UB1", team_id="TB")
        mention = f"<@{bot_user(beta)}> over the socket"
        ts = slack.add_message("CB", user="UB1", text=mention)
        event = ev.app_mention(channel="CB", user="UB1", text=mention, ts=ts)
        event["team"] = "TB"
        envelope = await slack.push_event(ev.envelope(event, team_id="TB",
                                                      authorizations=[authorization(beta)]))
        await slack.wait_for_ack(envelope, timeout=15)
        [answer] = await answered(slack, "CB", ts)
        assert "said=Ben: over the socket" in answer
        await bot.wait_idle()
        assert tokens_used(slack, "CB") == {slack.tokens_of(beta, "bot")[-1]}
        # Bolt authorizes each envelope: auth.test is asked once per token, then cached.
        asked = len(slack.calls_to("auth.test"))
        again = slack.add_message("CB", user="UB1", text=f"<@{bot_user(beta)}> again")
        event = ev.app_mention(channel="CB", user="UB1", text=f"<@{bot_user(beta)}> again",
                               ts=again)
        event["team"] = "TB"
        envelope = await slack.push_event(ev.envelope(event, team_id="TB",
                                                      authorizations=[authorization(beta)]))
        await slack.wait_for_ack(envelope, timeout=15)
        await answered(slack, "CB", again)
        assert len(slack.calls_to("auth.test")) == asked
    finally:
        await bot.close()


async def test_a_channel_shared_by_two_workspaces_of_the_org_is_one_conversation(
    slack: FakeSlack, app: BotProcess,
) -> None:
    """Gus (Gamma) starts a thread in a channel Gamma shares with Delta, both of the org
    that installed the app org-wide; Dee (Delta) follows up: same thread, same session."""
    slack.add_channel("CO", "org-finops", teams=["TG", "TD"])
    org = await install(app, slack, user="UG1", enterprise_id=ORG, org_wide=True)
    ts = await ask(app, slack, org, team="TG", channel="CO", user="UG1", text="remember 7")
    await answered(slack, "CO", ts)
    follow = await ask(app, slack, org, team="TD", channel="CO", user="UD1",
                       text="what number?", thread_ts=ts)
    answers_now = await answered(slack, "CO", ts, 2)
    assert follow and "turn=2" in answers_now[1] and "said=Dee: what number?" in answers_now[1]
    assert "session_id=E1-CO-" in answers_now[1]


async def test_user_groups_of_an_org_wide_install_name_the_workspace(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object,
) -> None:
    """An org token asks for a group's members in one workspace of the org: Gamma's
    denied group SG refuses Gus in Gamma, and is no group in Delta, where Dee is answered."""
    slack.add_usergroup("SG", ["UG1"], team_id="TG")
    bot = BotProcess(slack, adk.base_url, prefix=prefix, access_denied_usergroups="SG",
                     **distributed_settings(slack))
    await bot.start()
    try:
        org = await install(bot, slack, user="UG1", enterprise_id=ORG, org_wide=True)
        refused_ts = await ask(bot, slack, org, team="TG", channel="CG", user="UG1",
                               text="may I?")
        [note] = await eventually(lambda: [c for c in slack.calls_to("chat.postEphemeral")
                                           if c.ok], timeout=15)
        assert note.params["user"] == "UG1"
        ts = await ask(bot, slack, org, team="TD", channel="CD", user="UD1", text="and I?")
        [answer] = await answered(slack, "CD", ts)
        assert "said=Dee: and I?" in answer
        await bot.wait_idle()
        assert answers(slack, "CG", refused_ts) == []
        lookups = {(c.params.get("team_id"), c.error)
                   for c in slack.calls_to("usergroups.users.list")}
        assert lookups == {("TG", None), ("TD", "no_such_subteam")}
    finally:
        await bot.close()

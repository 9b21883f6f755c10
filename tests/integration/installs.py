"""Installing the bot as a distributable app, the way a browser does: the install page,
the user's approval on slack.com (the fake's `authorize`, which gives the code), and the
redirect back with the code, the `state` and the state cookie Bolt set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess

# The key the test bots seal installations with (test data, never a deployment's).
ENCRYPTION_KEY = "vM4GCfZjl0e5XPMBCAvX9UxzXUpyOUsWiEqlQ7-ipWg="
SECOND_KEY = "BB8T6vAUFeBjZeanRWXD1ACFIKdIFCA5F6YmdP_RtXM="
STATE_COOKIE = "slack-app-oauth-state"


def distributed_settings(slack: FakeSlack, **extra: str) -> dict[str, str]:
    """What makes a BotProcess a distributable app: no bot token, the fake's client id and
    secret, an encryption key."""
    return {"slack_bot_token": "", "slack_client_id": slack.workspaces.client_id,
            "slack_client_secret": slack.workspaces.client_secret,
            "installation_encryption_key": ENCRYPTION_KEY,
            "slack_authorize_url": f"{slack.base_url.removesuffix('/api/')}/oauth/v2/authorize",
            **extra}


@dataclass(frozen=True)
class InstallPage:
    """What `/slack/install` gave the browser: the "Add to Slack" link's query and the
    state cookie."""

    query: dict[str, list[str]]
    cookie: str

    @property
    def state(self) -> str:
        return self.query["state"][0]

    @property
    def scopes(self) -> list[str]:
        return self.query["scope"][0].split(",")


def browser() -> httpx.AsyncClient:
    """A browser of its own: a cookie jar that keeps what the bot's pages set."""
    return httpx.AsyncClient(timeout=15, trust_env=False)


async def open_install_page(bot: BotProcess, client: httpx.AsyncClient | None = None
                            ) -> InstallPage:
    """`/slack/install` in `client` (default: a fresh browser, closed after)."""
    if client is None:
        async with browser() as fresh:
            return await open_install_page(bot, fresh)
    page = await client.get(f"{bot.url}/slack/install")
    assert page.status_code == 200, page.text
    assert "Add to Slack" in page.text
    links = [unescape(h) for h in re.findall(r'href="([^"]+)"', page.text)]
    [authorize] = [link for link in links if "/oauth/v2/authorize" in link]
    query = parse_qs(urlparse(authorize).query)
    # The page lists every scope the link asks for, each with what the bot uses it for.
    for scope in query["scope"][0].split(","):
        assert f"<li><code>{scope}</code>: " in page.text, scope
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{STATE_COOKIE}="), cookie
    return InstallPage(query, cookie.split(";")[0])


async def redirect(bot: BotProcess, *, code: str, state: str, cookie: str | None,
                   client: httpx.AsyncClient | None = None) -> httpx.Response:
    """Slack sends the browser back to the app with the code and the state: `client` (a
    browser that keeps its cookies), or a fresh one sending `cookie` alone."""
    if client is not None:
        return await client.get(f"{bot.url}/slack/oauth_redirect",
                                params={"code": code, "state": state})
    async with browser() as fresh:
        headers = {"Cookie": cookie} if cookie else {}
        return await fresh.get(f"{bot.url}/slack/oauth_redirect",
                               params={"code": code, "state": state}, headers=headers)


async def install(bot: BotProcess, slack: FakeSlack, *, user: str, team_id: str | None = None,
                  enterprise_id: str | None = None, org_wide: bool = False) -> Any:
    """The whole flow in one browser (its cookie jar carries the state cookie); returns the
    fake's installation, checked to have succeeded."""
    async with browser() as client:
        page = await open_install_page(bot, client)
        code = slack.authorize(team_id=team_id, enterprise_id=enterprise_id, user_id=user,
                               org_wide=org_wide, scopes=page.scopes)
        response = await redirect(bot, code=code, state=page.state, cookie=None,
                                  client=client)
    assert response.status_code == 200, response.text
    installation = slack.installation(team_id=None if org_wide else team_id,
                                      enterprise_id=enterprise_id if org_wide else None)
    assert installation is not None
    return installation

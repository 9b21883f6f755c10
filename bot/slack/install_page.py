"""The "Add to Slack" page of a distributable app (`GET /slack/install`): Bolt's OAuth flow,
with a page that says what the app asks for, each bot scope with what the bot uses it for
(the manifest's scopes, `bot.slack.scopes`), above Slack's "Add to Slack" button
(https://docs.slack.dev/authentication/installing-with-oauth)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.state_utils import OAuthStateUtils

from bot.slack.scopes import SCOPE_REASONS

_BUTTON = ("https://platform.slack-edge.com/img/add_to_slack.png",
           "https://platform.slack-edge.com/img/add_to_slack@2x.png")


def install_page_html(url: str, scopes: list[str], *, title: str) -> str:
    """The page: `title`, the scopes asked for with their reasons, the button to `url`."""
    items = "\n".join(
        f"<li><code>{html.escape(scope)}</code>: {html.escape(SCOPE_REASONS.get(scope, ''))}"
        "</li>" for scope in scopes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>Add {html.escape(title)} to Slack</title>
<style>
body {{ padding: 10px 15px; font-family: verdana, sans-serif; max-width: 46em; margin: auto; }}
li {{ margin: 0.2em 0; }}
</style>
</head>
<body>
<h2>Add {html.escape(title)} to Slack</h2>
<p>It answers questions in the channels it is invited to and in direct messages. It asks
Slack for these permissions:</p>
<ul>
{items}
</ul>
<p><a href="{html.escape(url)}"><img alt="Add to Slack" height="40" width="139"
src="{_BUTTON[0]}" srcset="{_BUTTON[0]} 1x, {_BUTTON[1]} 2x"></a></p>
</body>
</html>
"""


class StateCookieCheck(OAuthStateUtils):
    """The browser check of the redirect: a state cookie that names another state is
    refused; a client that kept no cookie is left to the state itself, which is random,
    kept in Redis, good for one redirect and expiring (bot/store/oauth_state.py). An
    install is the authorizing user's own act on slack.com, so a redirect in another
    browser installs nothing the user did not approve."""

    def is_valid_browser(self, state: str | None,
                         request_headers: dict[str, str | Sequence[str]]) -> bool:
        if not state:
            return False
        raw = (request_headers or {}).get("cookie") or []
        cookies = [raw] if isinstance(raw, str) else list(raw)
        named = [value.strip().strip("\"'").partition("=")[2]
                 for cookie in cookies for value in cookie.split(";")
                 if value.strip().startswith(f"{self.cookie_name}=")]
        return not named or state in named


def plain_http_cookie(cookie: str) -> str:
    """The state cookie without `Secure`, for a page served over plain HTTP on this machine
    (a client keeps a `Secure` cookie from `http://127.0.0.1` to itself)."""
    return "; ".join(part for part in cookie.split("; ") if part.lower() != "secure")


def plain_http_loopback(redirect_uri: str | None) -> bool:
    """Whether SLACK_REDIRECT_URI is a plain-HTTP address on this machine (a local trial):
    then the state cookie cannot be `Secure`."""
    if not redirect_uri:
        return False
    url = urlparse(redirect_uri)
    return url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1")


class InstallFlow(AsyncOAuthFlow):
    """Bolt's OAuth flow with the install page above; `title` names the app on it. Its
    state cookie is `Secure`, unless `plain_http` (`plain_http_loopback`)."""

    def __init__(self, *, title: str, plain_http: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.plain_http = plain_http

    async def handle_installation(self, request: AsyncBoltRequest) -> BoltResponse:
        response = await super().handle_installation(request)
        if self.plain_http and "set-cookie" in response.headers:
            response.headers["set-cookie"] = [
                plain_http_cookie(c) for c in response.headers["set-cookie"]]
        return response

    async def build_install_page_html(self, url: str, request: AsyncBoltRequest) -> str:
        scopes = self.settings.scopes
        listed = sorted(scopes.split(",") if isinstance(scopes, str) else scopes or [])
        return install_page_html(url, listed, title=self.title)

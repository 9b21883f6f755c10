"""Workspaces, installations, tokens and OAuth for the fake Slack (tests/fakes/fake_slack.py).

One app, installed in many workspaces the way Slack installs it:

- a workspace (``Team``) may belong to an Enterprise Grid organisation (its
  ``enterprise_id``); an org-wide install covers every workspace of its organisation;
- a user approving the install on slack.com is played by :meth:`Workspaces.authorize`, which
  hands out a one-use ``code``; the app exchanges it with ``oauth.v2.access``
  (https://docs.slack.dev/reference/methods/oauth.v2.access) for a bot token of that
  installation;
- with token rotation (https://docs.slack.dev/authentication/using-token-rotation) access
  tokens expire after ``token_lifetime`` seconds and are renewed with a one-use refresh token;
- uninstalling revokes every token of the installation.

Every Web API call names a token; :meth:`Workspaces.authenticate` turns it into the
:class:`IssuedToken` (and so the installation) it belongs to, or fails the way Slack does:
``invalid_auth`` (unknown), ``token_revoked``, ``token_expired``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: A code from slack.com's authorize page is good for ten minutes
#: (https://docs.slack.dev/authentication/installing-with-oauth).
CODE_LIFETIME = 600.0
#: "With token rotation, it expires every 12 hours"
#: (https://docs.slack.dev/authentication/using-token-rotation).
TOKEN_LIFETIME = 43_200
#: "the refresh token you used is revoked after a short grace period" (same page); Slack does
#: not say how short, this is the fake's choice.
REFRESH_GRACE = 60.0
#: "we will enforce a limit of 2 active tokens" per installation when refreshing (same page).
MAX_ACTIVE_ROTATED = 2

TokenKind = Literal["bot", "user", "refresh", "app"]


class SlackApiFail(Exception):
    """Raised inside handlers to return ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _domain(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "team"


@dataclass(frozen=True)
class Team:
    """A workspace; ``enterprise_id`` names its Enterprise Grid organisation, if any."""

    id: str
    name: str
    domain: str
    enterprise_id: str | None = None
    enterprise_name: str | None = None

    @property
    def url(self) -> str:
        return f"https://{self.domain}.slack.com/"


@dataclass
class Installation:
    """The app installed in one workspace, or org-wide in one organisation
    (``is_enterprise_install``, ``team_id`` None)."""

    team_id: str | None
    team_name: str | None
    enterprise_id: str | None
    enterprise_name: str | None
    is_enterprise_install: bool
    bot_user_id: str
    bot_id: str
    bot_name: str
    scopes: tuple[str, ...]
    installer_user_id: str
    url: str
    active: bool = True


@dataclass
class IssuedToken:
    """A token Slack handed out. ``user_id`` is who calls with it (the bot user for bot
    tokens); a refresh token's ``renews`` is the kind of access token it renews."""

    value: str
    kind: TokenKind
    installation: Installation
    user_id: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float | None = None
    revoked: bool = False
    rotating: bool = False
    renews: TokenKind | None = None
    #: a refresh token: when it was first used
    used_at: float | None = None

    @property
    def bot_id(self) -> str | None:
        return self.installation.bot_id if self.kind == "bot" else None


@dataclass
class _Code:
    value: str
    installation_key: tuple[str, str]
    team_id: str | None
    enterprise_id: str | None
    user_id: str
    scopes: tuple[str, ...]
    user_scopes: tuple[str, ...]
    redirect_uri: str | None
    issued_at: float
    used: bool = False


@dataclass
class Workspaces:
    """Teams, installations and tokens of the fake Slack; the OAuth server's side."""

    app_id: str
    client_id: str
    client_secret: str
    default_scopes: tuple[str, ...]
    bot_name: str
    token_rotation: bool = False
    token_lifetime: float = TOKEN_LIFETIME
    refresh_grace: float = REFRESH_GRACE
    teams: dict[str, Team] = field(default_factory=dict)
    installations: dict[tuple[str, str], Installation] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    #: seconds added to the wall clock (:meth:`advance_clock`)
    clock_offset: float = 0.0
    #: called with each installation an OAuth exchange creates or re-activates
    on_install: Callable[[Installation], None] | None = None
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward: codes and rotated tokens expire by it."""
        self.clock_offset += seconds

    # ------------------------------------------------------------------ teams

    def add_team(
        self,
        team_id: str,
        name: str,
        *,
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        domain: str | None = None,
    ) -> Team:
        if enterprise_id is not None and enterprise_name is None:
            known = [t.enterprise_name for t in self.teams.values()
                     if t.enterprise_id == enterprise_id]
            enterprise_name = known[0] if known else enterprise_id
        team = Team(
            id=team_id,
            name=name,
            domain=domain or _domain(name),
            enterprise_id=enterprise_id,
            enterprise_name=enterprise_name,
        )
        self.teams[team_id] = team
        return team

    def team(self, team_id: str) -> Team:
        try:
            return self.teams[team_id]
        except KeyError:
            raise KeyError(f"unknown team {team_id!r}: add it with add_team") from None

    def org_team_ids(self, enterprise_id: str) -> frozenset[str]:
        return frozenset(t.id for t in self.teams.values() if t.enterprise_id == enterprise_id)

    def org_of(self, team_id: str) -> str:
        """The organisation a team belongs to: its enterprise id, or itself."""
        team = self.teams.get(team_id)
        return (team.enterprise_id if team and team.enterprise_id else None) or team_id

    def reach(self, inst: Installation) -> frozenset[str]:
        """The workspaces an installation acts in: its team, or every team of its org."""
        if inst.is_enterprise_install:
            assert inst.enterprise_id is not None
            return self.org_team_ids(inst.enterprise_id)
        assert inst.team_id is not None
        return frozenset({inst.team_id})

    def sees(self, inst: Installation, team_ids: Iterable[str]) -> bool:
        """True when one of ``team_ids`` is a workspace the installation acts in."""
        return not self.reach(inst).isdisjoint(team_ids)

    # ------------------------------------------------------------------ installations

    def install(
        self,
        *,
        team_id: str | None,
        enterprise_id: str | None,
        org_wide: bool,
        user_id: str,
        scopes: Sequence[str],
        bot_user_id: str | None = None,
        bot_id: str | None = None,
    ) -> Installation:
        """Create (or re-activate, keeping its bot ids) the installation, as the last step of
        an OAuth flow does."""
        if org_wide:
            assert enterprise_id is not None
            key = ("org", enterprise_id)
            enterprise_name = next((t.enterprise_name for t in self.teams.values()
                                    if t.enterprise_id == enterprise_id), enterprise_id)
            team_name = None
            url = f"https://{_domain(enterprise_name or enterprise_id)}.enterprise.slack.com/"
            # Organisation-level users have W ids.
            default_user, default_bot = f"WB{enterprise_id}", f"BB{enterprise_id}"
        else:
            assert team_id is not None
            team = self.team(team_id)
            key = ("team", team_id)
            enterprise_id, enterprise_name = team.enterprise_id, team.enterprise_name
            team_name, url = team.name, team.url
            default_user, default_bot = f"UB{team_id}", f"BB{team_id}"
        inst = self.installations.get(key)
        if inst is None:
            inst = Installation(
                team_id=None if org_wide else team_id,
                team_name=team_name,
                enterprise_id=enterprise_id,
                enterprise_name=enterprise_name,
                is_enterprise_install=org_wide,
                bot_user_id=bot_user_id or default_user,
                bot_id=bot_id or default_bot,
                bot_name=self.bot_name,
                scopes=tuple(scopes),
                installer_user_id=user_id,
                url=url,
            )
            self.installations[key] = inst
        else:
            inst.active = True
            inst.scopes = tuple(scopes)
            inst.installer_user_id = user_id
        return inst

    def installation(
        self, *, team_id: str | None = None, enterprise_id: str | None = None
    ) -> Installation | None:
        """The workspace installation of ``team_id``, or (``enterprise_id`` alone) the
        org-wide one; active or not."""
        if team_id is not None:
            return self.installations.get(("team", team_id))
        if enterprise_id is not None:
            return self.installations.get(("org", enterprise_id))
        raise ValueError("give team_id or enterprise_id")

    def uninstall(
        self, *, team_id: str | None = None, enterprise_id: str | None = None
    ) -> Installation:
        """Uninstall: every token of the installation is revoked
        (https://docs.slack.dev/authentication/using-token-rotation, "Uninstalling apps")."""
        inst = self.installation(team_id=team_id, enterprise_id=enterprise_id)
        if inst is None:
            raise KeyError(f"not installed: team_id={team_id} enterprise_id={enterprise_id}")
        inst.active = False
        for tok in self.tokens.values():
            if tok.installation is inst:
                tok.revoked = True
        return inst

    def tokens_of(self, inst: Installation, kind: TokenKind | None = None) -> list[IssuedToken]:
        return [t for t in self.tokens.values()
                if t.installation is inst and (kind is None or t.kind == kind)]

    # ------------------------------------------------------------------ tokens

    def register(
        self,
        value: str,
        kind: TokenKind,
        inst: Installation,
        *,
        user_id: str,
        scopes: Sequence[str],
        expires_in: float | None = None,
        renews: TokenKind | None = None,
    ) -> IssuedToken:
        now = self.now()
        tok = IssuedToken(
            value=value,
            kind=kind,
            installation=inst,
            user_id=user_id,
            scopes=tuple(scopes),
            issued_at=now,
            expires_at=None if expires_in is None else now + expires_in,
            rotating=expires_in is not None,
            renews=renews,
        )
        self.tokens[value] = tok
        return tok

    def authenticate(self, token: str) -> IssuedToken:
        """The token a Web API call was made with, or Slack's error for it."""
        tok = self.tokens.get(token)
        if tok is None or tok.kind in ("refresh", "app"):
            raise SlackApiFail("invalid_auth")
        if tok.revoked or not tok.installation.active:
            raise SlackApiFail("token_revoked")
        if tok.expires_at is not None and self.now() >= tok.expires_at:
            raise SlackApiFail("token_expired")
        return tok

    def expire_token(self, token: str) -> None:
        """Make ``token`` expired from now on (calls with it fail ``token_expired``)."""
        self.tokens[token].expires_at = self.now()

    def _issue_access(self, inst: Installation, kind: TokenKind, user_id: str,
                      scopes: Sequence[str]) -> tuple[IssuedToken, IssuedToken | None]:
        """A new access token (and its refresh token, with rotation on)."""
        n = next(self._serial)
        prefix = "xoxb" if kind == "bot" else "xoxp"
        if not self.token_rotation:
            owner = inst.team_id or inst.enterprise_id
            value = f"{prefix}-{owner}-{n}-{secrets.token_hex(12)}"
            return self.register(value, kind, inst, user_id=user_id, scopes=scopes), None
        access = self.register(f"xoxe.{prefix}-1-{n}-{secrets.token_hex(12)}", kind, inst,
                               user_id=user_id, scopes=scopes, expires_in=self.token_lifetime)
        refresh = self.register(f"xoxe-1-{n}-{secrets.token_hex(12)}", "refresh", inst,
                                user_id=user_id, scopes=scopes, renews=kind)
        self._limit_active(inst, kind, user_id)
        return access, refresh

    def _limit_active(self, inst: Installation, kind: TokenKind, user_id: str) -> None:
        now = self.now()
        live = [t for t in self.tokens_of(inst, kind)
                if t.rotating and t.user_id == user_id and not t.revoked
                and (t.expires_at is None or now < t.expires_at)]
        live.sort(key=lambda t: t.issued_at)
        for old in live[:-MAX_ACTIVE_ROTATED]:
            old.revoked = True

    # ------------------------------------------------------------------ OAuth

    def authorize(
        self,
        *,
        team_id: str | None = None,
        enterprise_id: str | None = None,
        user_id: str,
        org_wide: bool = False,
        scopes: Sequence[str] | None = None,
        user_scopes: Sequence[str] = (),
        redirect_uri: str | None = None,
    ) -> str:
        """A user approves the install on slack.com: returns the one-use ``code`` Slack puts
        on the redirect to the app's ``/slack/oauth_redirect``."""
        if org_wide:
            if enterprise_id is None and team_id is not None:
                enterprise_id = self.team(team_id).enterprise_id
            if enterprise_id is None or not self.org_team_ids(enterprise_id):
                raise ValueError("an org-wide install needs the enterprise_id of a known org")
            key = ("org", enterprise_id)
            team_id = None
        else:
            if team_id is None:
                raise ValueError("a workspace install needs team_id")
            enterprise_id = self.team(team_id).enterprise_id
            key = ("team", team_id)
        value = f"{int(self.now())}.{next(self._serial)}.{secrets.token_hex(32)}"
        self.codes[value] = _Code(
            value=value,
            installation_key=key,
            team_id=team_id,
            enterprise_id=enterprise_id,
            user_id=user_id,
            scopes=tuple(self.default_scopes if scopes is None else scopes),
            user_scopes=tuple(user_scopes),
            redirect_uri=redirect_uri,
            issued_at=self.now(),
        )
        return value

    def _client(self, params: dict[str, Any], authorization: str) -> None:
        """The app authenticates with HTTP Basic (as slack_sdk does) or form parameters."""
        client_id = params.get("client_id")
        client_secret = params.get("client_secret")
        if authorization.startswith("Basic "):
            try:
                raw = base64.b64decode(authorization[len("Basic "):].strip(), validate=True)
                client_id, _, client_secret = raw.decode("latin-1").partition(":")
            except (binascii.Error, ValueError):
                raise SlackApiFail("invalid_client_id") from None
        if not client_id or str(client_id) != self.client_id:
            raise SlackApiFail("invalid_client_id")
        if str(client_secret or "") != self.client_secret:
            raise SlackApiFail("bad_client_secret")

    def oauth_v2_access(self, params: dict[str, Any], authorization: str) -> dict[str, Any]:
        """``oauth.v2.access``: a code for an installation's tokens, or (``grant_type=
        refresh_token``) a refresh token for new ones."""
        self._client(params, authorization)
        grant_type = str(params.get("grant_type") or "authorization_code")
        if grant_type == "refresh_token":
            return self._refresh(str(params.get("refresh_token") or ""))
        if grant_type != "authorization_code":
            raise SlackApiFail("invalid_grant_type")
        code = self.codes.get(str(params.get("code") or ""))
        if code is None or self.now() >= code.issued_at + CODE_LIFETIME:
            raise SlackApiFail("invalid_code")
        if code.used:
            # Slack's answer to a code exchanged twice
            # (https://docs.slack.dev/reference/methods/oauth.access lists it).
            raise SlackApiFail("code_already_used")
        code.used = True  # a refused exchange spends the code too
        if code.redirect_uri is not None and params.get("redirect_uri") != code.redirect_uri:
            raise SlackApiFail("bad_redirect_uri")
        if code.team_id is not None and code.enterprise_id is not None:
            org = self.installations.get(("org", code.enterprise_id))
            if org is not None and org.active:
                raise SlackApiFail("cannot_install_an_org_installed_app")
        inst = self.install(
            team_id=code.team_id,
            enterprise_id=code.enterprise_id,
            org_wide=code.installation_key[0] == "org",
            user_id=code.user_id,
            scopes=code.scopes,
        )
        if self.on_install is not None:
            self.on_install(inst)
        bot, bot_refresh = self._issue_access(inst, "bot", inst.bot_user_id, inst.scopes)
        authed_user: dict[str, Any] = {"id": code.user_id}
        if code.user_scopes:
            user, user_refresh = self._issue_access(inst, "user", code.user_id, code.user_scopes)
            authed_user.update(scope=",".join(code.user_scopes), access_token=user.value,
                               token_type="user")
            if user_refresh is not None:
                authed_user.update(expires_in=int(self.token_lifetime),
                                   refresh_token=user_refresh.value)
        body = self._token_body(inst, bot, bot_refresh)
        return {"app_id": self.app_id, "authed_user": authed_user, **body}

    def _refresh(self, value: str) -> dict[str, Any]:
        tok = self.tokens.get(value)
        now = self.now()
        if (tok is None or tok.kind != "refresh" or tok.revoked
                or not tok.installation.active
                or (tok.used_at is not None and now > tok.used_at + self.refresh_grace)):
            raise SlackApiFail("invalid_refresh_token")
        if tok.used_at is None:
            tok.used_at = now
        assert tok.renews is not None
        inst = tok.installation
        access, refresh = self._issue_access(inst, tok.renews, tok.user_id, tok.scopes)
        if tok.renews == "user":
            assert refresh is not None
            return {
                "app_id": self.app_id,
                "access_token": access.value,
                "token_type": "user",
                "scope": ",".join(access.scopes),
                "expires_in": int(self.token_lifetime),
                "refresh_token": refresh.value,
                **self._where(inst),
            }
        return {"app_id": self.app_id, **self._token_body(inst, access, refresh)}

    def _token_body(self, inst: Installation, access: IssuedToken,
                    refresh: IssuedToken | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "scope": ",".join(inst.scopes),
            "token_type": "bot",
            "access_token": access.value,
            "bot_user_id": inst.bot_user_id,
        }
        if refresh is not None:
            body["expires_in"] = int(self.token_lifetime)
            body["refresh_token"] = refresh.value
        body.update(self._where(inst))
        return body

    @staticmethod
    def _where(inst: Installation) -> dict[str, Any]:
        team = None if inst.is_enterprise_install else {"id": inst.team_id,
                                                        "name": inst.team_name}
        enterprise = (None if inst.enterprise_id is None
                      else {"id": inst.enterprise_id, "name": inst.enterprise_name})
        return {"team": team, "enterprise": enterprise,
                "is_enterprise_install": inst.is_enterprise_install}


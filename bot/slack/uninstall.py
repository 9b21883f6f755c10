"""Uninstalls (many workspaces): `app_uninstalled` deletes the installation the event came
through, `tokens_revoked` the installation of a revoked bot token (all its records) and
the records of revoked user tokens (https://docs.slack.dev/reference/events/app_uninstalled,
https://docs.slack.dev/reference/events/tokens_revoked). The installation is read from the
event's `authorizations`, so an org-wide install is deleted as the org's, not as one
workspace's. Queued turns of the workspace then find no installation and are dropped
unanswered; its threads wait for the retention schedule or `python -m bot installs purge`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.slack.routing import installation_of
from bot.slack.token_refresh import RefreshingInstallationStore
from bot.turns import InstallRef

log = logging.getLogger("bot.slack.uninstall")


def uninstalled_ref(body: Mapping[str, Any]) -> InstallRef | None:
    """The installation an uninstall event is about: its `authorizations`, else the ids of
    the payload."""
    ref = installation_of(body)
    if ref is not None:
        return ref
    team, enterprise = body.get("team_id"), body.get("enterprise_id")
    org = body.get("is_enterprise_install") is True
    if not isinstance(team, str) and not isinstance(enterprise, str):
        return None
    return InstallRef(team_id="" if org else str(team or ""),
                      enterprise_id=str(enterprise or ""), org_install=org)


def register_uninstall(app: AsyncApp, *, installations: RefreshingInstallationStore,
                       forget: Callable[[InstallRef], None]) -> None:
    """`forget`: drop this process's cached clients of the installation."""

    async def on_uninstalled(body: dict[str, Any]) -> None:
        ref = await _installed_ref(body)
        if ref is None:
            return
        await installations.async_delete_all(
            enterprise_id=ref.enterprise_id or None, team_id=ref.team_id or None,
            is_enterprise_install=ref.org_install)
        forget(ref)
        log.info("app uninstalled", extra={"team_id": ref.team_id,
                                           "enterprise_id": ref.enterprise_id})

    async def _installed_ref(body: Mapping[str, Any]) -> InstallRef | None:
        """The installation the event is about. Lifecycle events may carry no
        `authorizations`: then the workspace's own installation, or else its org's
        org-wide one."""
        ref = uninstalled_ref(body)
        if ref is None or installation_of(body) is not None or ref.org_install:
            return ref
        if not ref.enterprise_id or await installations.async_find_bot(
                enterprise_id=ref.enterprise_id, team_id=ref.team_id or None) is not None:
            return ref
        return InstallRef(enterprise_id=ref.enterprise_id, org_install=True)

    async def on_tokens_revoked(body: dict[str, Any], event: dict[str, Any]) -> None:
        ref = await _installed_ref(body)
        tokens = event.get("tokens")
        if ref is None or not isinstance(tokens, Mapping):
            return
        enterprise, team = ref.enterprise_id or None, ref.team_id or None
        users = tokens.get("oauth")
        for user in users if isinstance(users, list) else []:
            if isinstance(user, str) and user:
                await installations.async_delete_installation(
                    enterprise_id=enterprise, team_id=team, user_id=user,
                    is_enterprise_install=ref.org_install)
        if tokens.get("bot"):
            # The installer records hold the same (revoked) bot token: all of it goes.
            await installations.async_delete_all(enterprise_id=enterprise, team_id=team,
                                                 is_enterprise_install=ref.org_install)
            forget(ref)
            log.info("bot token revoked", extra={"team_id": ref.team_id,
                                                 "enterprise_id": ref.enterprise_id})

    app.event("app_uninstalled")(on_uninstalled)
    app.event("tokens_revoked")(on_tokens_revoked)

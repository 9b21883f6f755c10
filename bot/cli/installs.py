"""`python -m bot installs list | show | revoke | purge | newkey | rekey`: the installations
of a distributable app (SLACK_CLIENT_ID; bot/store/installations.py). Tokens are never
printed.

- `list`: every installed workspace or org, then the uninstalled ones whose threads wait
  for the purge;
- `show T…|E…`: one installation: names, ids, bot, scopes, installer, install date, token
  expiry;
- `revoke T…|E…`: revokes the bot token at Slack (`auth.revoke`) and deletes the
  installation; the workspace's queued turns are dropped unanswered;
- `purge T…|E…`: deletes the thread data (mappings, queues, dedupe, outboxes) of a
  workspace, or of an org-wide install, at once, instead of on the retention schedule;
  refused unless it is listed as uninstalled, or `--force`;
- `newkey`: prints a new INSTALLATION_ENCRYPTION_KEY;
- `rekey`: seals every record again under the first key of INSTALLATION_ENCRYPTION_KEY."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cli import render_fields, render_table, when
from bot.cli.sessions import CliError, run_with_settings
from bot.config import Settings
from bot.runtime import connect_redis
from bot.store.cipher import Cipher, CipherError, new_key
from bot.store.connect import REDIS_FAILURES, close_redis, describe_redis
from bot.store.installations import InstallKeys, RedisInstallationStore, split_owner
from bot.store.keys import Keys
from bot.store.thread_index import purge_team_threads


def add_installs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    installs = sub.add_parser(
        "installs", help="list, show, revoke or purge the app's installations (many "
                         "workspaces), never printing tokens",
        description="The workspaces and Enterprise Grid orgs that installed the app "
                    "(SLACK_CLIENT_ID), kept in Redis. WORKSPACE is a team id (T…) or, for "
                    "an org-wide install, the enterprise id (E…).")
    actions = installs.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every installation, then the uninstalled workspaces")
    for name, text in (("show", "one installation"),
                       ("revoke", "revoke the bot token at Slack and delete the installation")):
        action = actions.add_parser(name, help=text)
        action.add_argument("workspace", metavar="WORKSPACE", help="T… or E…")
    purge = actions.add_parser("purge", help="delete a workspace's thread data now")
    purge.add_argument("workspace", metavar="WORKSPACE", help="T… or E…")
    purge.add_argument("--force", action="store_true",
                       help="purge even though the workspace is still installed")
    actions.add_parser("newkey", help="print a new INSTALLATION_ENCRYPTION_KEY")
    actions.add_parser("rekey", help="seal every installation under the first key of "
                                     "INSTALLATION_ENCRYPTION_KEY")


def _store(settings: Settings, client: aioredis.Redis) -> RedisInstallationStore:
    secret = settings.installation_encryption_key
    if secret is None or not secret.get_secret_value():
        raise CliError("config error: INSTALLATION_ENCRYPTION_KEY is not set (the key the "
                       "installations are sealed with)", 2)
    try:
        cipher = Cipher.from_setting(secret.get_secret_value())
    except ValueError as exc:
        raise CliError(f"config error: {exc}", 2) from exc
    return RedisInstallationStore(client, InstallKeys(settings.redis_key_prefix), cipher)


def owner_for(workspace: str, owners: Sequence[str]) -> str | None:
    """The installation a T… or E… names, among `owners` (`<e>:<t>`)."""
    for owner in owners:
        enterprise, team = split_owner(owner)
        if workspace in (team, enterprise) and (team == workspace or team is None):
            return owner
    return None


def _scope_list(value: object) -> list[str]:
    """An installation's scopes (slack_sdk keeps a list; a comma-separated string too)."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return sorted(str(s).strip() for s in items if s and str(s).strip())


def _scopes(value: object) -> str:
    return ", ".join(_scope_list(value)) or "-"


async def _list(store: RedisInstallationStore) -> int:
    now = time.time()
    rows: list[list[object]] = []
    for owner, installed_at in await store.owners():
        enterprise, team = split_owner(owner)
        bot = await store.async_find_bot(enterprise_id=enterprise, team_id=team,
                                         is_enterprise_install=team is None)
        name = (bot.enterprise_name if team is None else bot.team_name) if bot else None
        rows.append([team or enterprise or "-", "org" if team is None else "workspace",
                     name or "-", enterprise or "-", when(installed_at, now),
                     len(_scope_list(bot.bot_scopes)) if bot else 0])
    print(render_table(["id", "kind", "name", "enterprise", "installed", "scopes"], rows,
                       right=[5]) if rows else "No installations.")
    gone = await store.uninstalled()
    if gone:
        print("\nUninstalled (thread data purged on the retention schedule, or by "
              "`installs purge`):")
        print(render_table(["id", "enterprise", "uninstalled"], [
            [split_owner(o)[1] or split_owner(o)[0] or "-", split_owner(o)[0] or "-",
             when(at, now)] for o, at in gone]))
    return 0


async def _show(store: RedisInstallationStore, workspace: str) -> int:
    owner = owner_for(workspace, [o for o, _ in await store.owners()])
    if owner is None:
        raise CliError(f"{workspace} has not installed the app (see `installs list`)")
    enterprise, team = split_owner(owner)
    org = team is None
    installation = await store.async_find_installation(
        enterprise_id=enterprise, team_id=team, is_enterprise_install=org)
    bot = await store.async_find_bot(enterprise_id=enterprise, team_id=team,
                                     is_enterprise_install=org)
    if bot is None:
        raise CliError(f"{workspace}: no bot installation found")
    expires = bot.bot_token_expires_at
    fields: list[tuple[str, object]] = [
        ("kind", "org-wide install (Enterprise Grid)" if org else "workspace install"),
        ("team", f"{bot.team_name or '-'} ({team})" if team else "-"),
        ("enterprise", f"{bot.enterprise_name or '-'} ({enterprise})" if enterprise else "-"),
        ("app", bot.app_id or "-"),
        ("bot user", bot.bot_user_id or "-"),
        ("bot id", bot.bot_id or "-"),
        ("scopes", _scopes(bot.bot_scopes)),
        ("installed", when(float(bot.installed_at))),
        ("installed by", installation.user_id if installation is not None else "-"),
        ("token", f"rotating, expires {when(float(expires))}" if expires
         else "does not expire"),
    ]
    print(render_fields(fields))
    return 0


async def _revoke(store: RedisInstallationStore, settings: Settings, workspace: str) -> int:
    owner = owner_for(workspace, [o for o, _ in await store.owners()])
    if owner is None:
        raise CliError(f"{workspace} has not installed the app (see `installs list`)")
    enterprise, team = split_owner(owner)
    org = team is None
    bot = await store.async_find_bot(enterprise_id=enterprise, team_id=team,
                                     is_enterprise_install=org)
    note = ""
    if bot is not None and bot.bot_token:
        client = AsyncWebClient(token=bot.bot_token, base_url=settings.slack_api_url,
                                timeout=15)
        try:
            await client.auth_revoke()
        except SlackApiError as exc:
            note = (f"; Slack refused to revoke the token ({exc.response.get('error')}: "
                    "revoked or expired already, or uninstall the app in that workspace)")
        except Exception as exc:
            note = (f"; the token was NOT revoked at Slack (unreachable: "
                    f"{type(exc).__name__}): uninstall the app in that workspace")
        finally:
            if client.session is not None:
                await client.session.close()
    await store.async_delete_all(enterprise_id=enterprise, team_id=team,
                                 is_enterprise_install=org)
    revoked = "Deleted" if note else "Revoked and deleted"
    print(f"{revoked} the installation of {workspace}{note}. Its queued turns are dropped "
          "unanswered; its thread data is purged on the retention schedule, or now with "
          f"`python -m bot installs purge {team or workspace}`.")
    return 0


async def _purge(store: RedisInstallationStore, settings: Settings, workspace: str,
                 force: bool) -> int:
    if not re.fullmatch(r"[TE][A-Z0-9]+", workspace):
        raise CliError(f"{workspace!r} is neither a workspace (T…) nor an org (E…) id")
    # The uninstalled installation that is exactly this one: a workspace's own (T…), or
    # an org-wide one (E…), never a workspace install inside an org for the org's id.
    gone = [o for o, _ in await store.uninstalled()
            if (split_owner(o)[1] or split_owner(o)[0]) == workspace]
    if not gone and not force:
        # Still installed (by itself or by its org), or never: nothing says it may go.
        raise CliError(f"{workspace} is not listed as uninstalled (`installs list`): revoke "
                       "it first (`installs revoke`), or pass --force")
    keys = Keys(settings.redis_key_prefix, settings.redis_shards)
    threads, deleted = await purge_team_threads(store.redis, keys, workspace)
    for owner in gone:
        await store.forget_uninstalled(owner)
    print(f"Purged {workspace}: {threads} thread(s), {deleted} key(s) deleted. ADK sessions "
          "are not deleted.")
    return 0


# Replaces a record only if it is still the one read: a token refreshed meanwhile by a
# running bot is never overwritten with the old one.
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1
end
return 0
"""


async def _rekey(store: RedisInstallationStore) -> int:
    swap = store.redis.register_script(_SWAP)
    count = 0
    async for key in store.redis.scan_iter(match=f"{store.keys.base}:*", count=500):
        if not any(f":{kind}:" in key for kind in ("bot", "inst")):
            continue
        while (sealed := await store.redis.get(key)) is not None:
            if await swap(keys=[key], args=[sealed, store.cipher.reseal(str(sealed))]):
                count += 1
                break
    print(f"Sealed {count} record(s) under the first key of INSTALLATION_ENCRYPTION_KEY; the "
          "other keys can be dropped from it now.")
    return 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    client, _embedded = connect_redis(settings)
    shown = describe_redis(settings)
    try:
        store = _store(settings, client)
        if args.action == "list":
            return await _list(store)
        if args.action == "show":
            return await _show(store, args.workspace)
        if args.action == "revoke":
            return await _revoke(store, settings, args.workspace)
        if args.action == "purge":
            return await _purge(store, settings, args.workspace, args.force)
        return await _rekey(store)
    except CipherError as exc:
        raise CliError(str(exc)) from exc
    except REDIS_FAILURES as exc:
        raise CliError(f"Redis at {shown} failed: {exc}") from exc
    finally:
        await close_redis(client)


def run_installs(args: argparse.Namespace) -> int:
    if args.action == "newkey":
        print(new_key())
        return 0
    return run_with_settings(lambda settings: _run(args, settings))

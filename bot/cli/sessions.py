"""`python -m bot sessions list | show | reset | purge`: the thread → ADK session mappings
the bot keeps in Redis, for operators."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from bot.adk.client import AdkError
from bot.cli import (
    duration_arg,
    local_time,
    parse_duration,
    render_fields,
    render_table,
    when,
)
from bot.config import Settings, describe_validation_error
from bot.store.connect import (
    REDIS_FAILURES,
    close_redis,
    describe_redis,
    redis_client,
    uses_real_redis,
)
from bot.store.layout import LayoutError, check_layout
from bot.store.redis_store import Store
from bot.store.thread_record import ThreadRecord
from bot.turns import DM_THREAD, session_id_for, thread_key

_KEY = re.compile(r"^[A-Za-z0-9_-]+:[A-Za-z0-9_-]+:(?:\d+\.\d+|dm)$")
_LINK_PATH = re.compile(r"^/archives/([A-Z0-9]+)/p(\d{7,})$")
_TS = re.compile(r"^\d+\.\d+$")
PURGE_LIST_LIMIT = 50


class CliError(Exception):
    """An expected failure: printed as `error: …`, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---- thread references: keys and Slack links (pure) -----------------------------------


@dataclass(frozen=True)
class SlackLink:
    channel: str
    ts: str
    thread_ts: str | None


def is_thread_key(text: str) -> bool:
    return bool(_KEY.match(text))


def parse_slack_link(text: str) -> SlackLink | None:
    """A Slack message link (https://x.slack.com/archives/C123/p1700000000000100, with an
    optional ?thread_ts=1700000000.000050 for a reply), or None if it is not one."""
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc.endswith("slack.com"):
        return None
    match = _LINK_PATH.match(parts.path.rstrip("/"))
    if not match:
        return None
    digits = match.group(2)
    ts = f"{digits[:-6]}.{digits[-6:]}"
    thread_values = parse_qs(parts.query).get("thread_ts")
    thread_ts = thread_values[0] if thread_values else None
    if thread_ts is not None and not _TS.match(thread_ts):
        return None
    return SlackLink(match.group(1), ts, thread_ts)


def link_keys(link: SlackLink, team: str) -> list[str]:
    """The thread keys a link can mean, most likely first. A reply's link names its
    thread; a channel message is its own thread's root; a DM message without thread_ts is
    either a DM thread's root or part of the top-level DM conversation (`dm`)."""
    if link.thread_ts:
        return [thread_key(team, link.channel, link.thread_ts)]
    if link.channel.startswith("D"):
        return [thread_key(team, link.channel, link.ts),
                thread_key(team, link.channel, DM_THREAD)]
    return [thread_key(team, link.channel, link.ts)]


# ---- rendering (pure) -----------------------------------------------------------------


def _session_cell(record: ThreadRecord | None) -> str:
    if record is None:
        return "(mapping expired)"
    return record.session_id or "(new on next message)"


def render_thread_list(rows: Sequence[tuple[str, float, ThreadRecord | None]], total: int,
                       now: float, source: str = "") -> str:
    """The engaged threads as a table; `source` says where an empty list looked."""
    if not rows:
        return "No threads in the index" + (f" of {source}." if source else ".")
    table = render_table(
        ["THREAD", "SESSION", "TURNS", "LAST ACTIVITY", "CREATED BY"],
        [
            [key, _session_cell(record), record.turns if record else "-",
             when((record.last_activity if record and record.last_activity else score), now),
             (record.created_by or "-") if record else "-"]
            for key, score, record in rows
        ],
        right=[2],
    )
    head = (f"{total} thread{'s' if total != 1 else ''}, newest first" if len(rows) >= total
            else f"The {len(rows)} most recently active of {total} threads "
                 "(--limit N shows more)")
    return f"{head}\n\n{table}"


def render_thread(record: ThreadRecord, queued: int, running: bool, now: float) -> str:
    reset_at = float(record.reset_at) if _TS.match(record.reset_at or "") else 0.0
    pairs: list[tuple[str, object]] = [
        ("engaged", "yes" if record.engaged else "no (the bot ignores un-mentioned replies)"),
        ("ADK user id", record.adk_user_id or "-"),
        ("session id", record.session_id or "(none: the next message starts a new one)"),
        ("generation", record.generation),
        ("created by", record.created_by or "-"),
        ("created at", when(record.created_at, now)),
        ("last activity", when(record.last_activity, now)),
        ("turns", record.turns),
        ("reset at", when(reset_at, now) if reset_at else "-"),
        ("queued turns", queued),
        ("running now", "yes" if running else "no"),
    ]
    return f"Thread {record.key}\n\n{render_fields(pairs, indent='  ')}"


def render_adk_session(session: dict[str, object], now: float) -> str:
    events = session.get("events")
    state = session.get("state")
    updated = session.get("lastUpdateTime") or session.get("last_update_time") or 0
    try:
        updated_ts = float(updated)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        updated_ts = 0.0
    keys = sorted(state) if isinstance(state, dict) else []
    pairs: list[tuple[str, object]] = [
        ("events", len(events) if isinstance(events, list) else "?"),
        ("last update", when(updated_ts, now)),
        ("state keys", ", ".join(keys) if keys else "(none)"),
    ]
    return render_fields(pairs, indent="  ")


def render_purge(report: dict[str, list[tuple[str, float]]], *, age: str, cutoff: float,
                 dry_run: bool, now: float) -> str:
    going = sorted(report["purged"] + report["expired"], key=lambda item: item[1])
    lines = [f"{'Would purge' if dry_run else 'Purged'} thread mappings idle for more than "
             f"{age} (last activity before {local_time(cutoff)})."]
    if going:
        index_only = {key for key, _ in report["expired"]}
        shown = going[:PURGE_LIST_LIMIT]
        lines += ["", render_table(
            ["THREAD", "LAST ACTIVITY", ""],
            [[key, when(last, now) if last else "-",
              "(index entry only: mapping already expired)" if key in index_only else ""]
             for key, last in shown],
        )]
        if len(going) > len(shown):
            lines.append(f"… and {len(going) - len(shown)} more")
    purged, expired = len(report["purged"]), len(report["expired"])

    def verb(n: int) -> str:
        return "would be" if dry_run else ("was" if n == 1 else "were")

    lines += [
        "",
        f"{purged} mapping{'' if purged == 1 else 's'} {verb(purged)} removed "
        "(hash and index entry).",
        f"{expired} index entr{'y' if expired == 1 else 'ies'} {verb(expired)} dropped "
        "whose mapping had already expired.",
    ]
    if report["busy"]:
        lines.append(f"{len(report['busy'])} kept: a turn is queued or running "
                     f"({', '.join(k for k, _ in report['busy'][:5])}"
                     f"{', …' if len(report['busy']) > 5 else ''}).")
    if report["active"]:
        lines.append(f"{len(report['active'])} kept: active since the cutoff (index "
                     f"{'is behind' if dry_run else 'updated'}).")
    lines.append("ADK sessions are not deleted; a purged thread starts over only if the bot "
                 "is mentioned in it again.")
    return "\n".join(lines)


# ---- the commands ---------------------------------------------------------------------


def _load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = "\n".join(f"config error: {line}" for line in describe_validation_error(exc))
        raise CliError(lines, 2) from exc
    problems = settings.redis_problems()
    if problems:
        raise CliError("\n".join(f"config error: {line}" for line in problems), 2)
    if not uses_real_redis(settings):
        raise CliError(
            "REDIS_URL is not set. Without it the bot keeps threads in an embedded Redis "
            "inside its own process, which this command cannot see. Set REDIS_URL to the "
            "bot's Redis.", 2)
    return settings


async def _team_id(settings: Settings, explicit: str | None) -> str | None:
    if explicit:
        return explicit.strip().upper()
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    if not token:
        return None
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=token, base_url=settings.slack_api_url, timeout=10)
    try:
        response = await client.auth_test()
    except Exception:
        return None
    return str(response.get("team_id") or "") or None


async def resolve_key(ref: str, store: Store, settings: Settings, team: str | None) -> str:
    """A thread key, or a Slack message link turned into one."""
    ref = ref.strip()
    if is_thread_key(ref):
        return ref
    link = parse_slack_link(ref)
    if link is None:
        raise CliError(f"{ref!r} is neither a thread key (team:channel:thread_ts, or "
                       "team:channel:dm for a DM) nor a Slack message link", 2)
    team_id = await _team_id(settings, team)
    if team_id:
        candidates = link_keys(link, team_id)
    else:
        # No team id: the index knows the key if the bot ever engaged in that thread.
        patterns = [key.replace("TEAM:", "*:", 1) for key in link_keys(link, "TEAM")]
        candidates = []
        for pattern in patterns:
            candidates += await store.threads.find_thread_keys(pattern)
        if len(set(candidates)) > 1:
            raise CliError(f"the link matches several threads ({', '.join(candidates)}); "
                           "pass --team T…", 2)
        if not candidates:
            raise CliError("cannot tell the workspace of this link: pass --team T… (E… for "
                           "an org-wide install; or, for one workspace, set SLACK_BOT_TOKEN: "
                           "its auth.test names the team)", 2)
    for key in candidates:
        if await store.get_thread(key) is not None:
            return key
    return candidates[0]


async def _list(store: Store, limit: int, source: str) -> int:
    rows = await store.threads.recent_threads(limit)
    total = await store.threads.thread_count()
    print(render_thread_list(rows, total, time.time(), source))
    return 0


async def _show(store: Store, settings: Settings, key: str, source: str) -> int:
    record = await store.get_thread(key)
    if record is None:
        raise CliError(f"no thread mapping for {key} (never engaged, expired or purged) "
                       f"under {source}")
    queued, running = await store.threads.thread_activity(key)
    now = time.time()
    print(render_thread(record, queued, running, now))
    print()
    from bot.cli.usage import render_thread_tokens  # it imports this module

    cost = " (est. cost from TOKEN_PRICES)" if settings.token_prices else ""
    print(f"Tokens{cost}")
    print(render_thread_tokens(record.tokens, settings.token_prices))
    print()
    where = f"{settings.adk_base_url}, app {settings.adk_app_name}"
    if not record.session_id:
        upcoming = session_id_for(key, record.generation)
        print(f"ADK session: none yet ({where}); the next message in the thread starts "
              f"{upcoming}.")
        return 0
    from bot.runtime import build_adk

    adk = build_adk(settings)
    try:
        session = await adk.get_session(record.adk_user_id, record.session_id)
    except AdkError as exc:
        print(f"ADK session: not checked, cannot reach ADK at {where} ({exc})")
        return 1
    finally:
        await adk.aclose()
    if session is None:
        print(f"ADK session: {record.session_id} not found in ADK ({where}).")
        print("  ADK may have restarted with in-memory sessions. On the next message the bot "
              "creates it again and reseeds it from the Slack thread.")
        return 0
    print(f"ADK session {record.session_id} ({where})")
    print(render_adk_session(session, now))
    return 0


async def _reset(store: Store, key: str) -> int:
    record = await store.get_thread(key)
    if record is None:
        raise CliError(f"no thread mapping for {key} (never engaged, expired or purged)")
    if not record.session_id:
        print(f"Thread {key} has no session (already reset, generation "
              f"{record.generation}); the next message starts "
              f"{session_id_for(key, record.generation)}. Nothing to do.")
        return 0
    queued, running = await store.threads.thread_activity(key)
    await store.reset_session(key, f"{time.time():.6f}")
    nxt = session_id_for(key, record.generation + 1)
    print(f"Reset thread {key}.")
    turns = f"{record.turns} turn{'' if record.turns == 1 else 's'}"
    print(f"  old session  {record.session_id} ({turns}; it stays in ADK)")
    print(f"  next message starts a new ADK session: {nxt} (generation "
          f"{record.generation + 1})")
    print("  messages from before now are not used as context for it")
    if running or queued:
        print(f"  note: {queued} turn(s) queued{', one running' if running else ''}; a turn "
              "that already started finishes in the old session")
    return 0


async def _purge(store: Store, age_text: str, seconds: float, dry_run: bool) -> int:
    now = time.time()
    cutoff = now - seconds
    report = await store.threads.purge_threads(cutoff, dry_run=dry_run)
    print(render_purge(report, age=age_text, cutoff=cutoff, dry_run=dry_run, now=now))
    return 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=30)
    store = Store.from_settings(settings, client)
    shown = describe_redis(settings)
    try:
        try:
            await client.ping()
        except REDIS_FAILURES as exc:
            raise CliError(f"cannot reach Redis at {shown} ({exc}); check REDIS_URL") from exc
        try:
            # list and show only read: a fresh (or mistyped) prefix is left unmarked.
            await check_layout(client, store.keys, mark=args.action not in ("list", "show"))
        except LayoutError as exc:
            raise CliError(str(exc)) from exc
        source = f"REDIS_KEY_PREFIX={store.keys.prefix!r} in Redis at {shown}"
        if args.action == "list":
            return await _list(store, args.limit, source)
        if args.action == "purge":
            return await _purge(store, args.older_than, parse_duration(args.older_than),
                                args.dry_run)
        key = await resolve_key(args.thread, store, settings, args.team)
        if args.action == "show":
            return await _show(store, settings, key, source)
        return await _reset(store, key)
    except REDIS_FAILURES as exc:
        raise CliError(f"Redis at {shown} failed: {exc}") from exc
    finally:
        await close_redis(client)


def run_with_settings(command: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """An operator command on the bot's Redis: the settings loaded, `command` run; a
    CliError printed (as a config error, or `error: …`) and its exit code returned."""
    try:
        settings = _load_settings()
        return asyncio.run(command(settings))
    except CliError as exc:
        text = str(exc)
        print(text if text.startswith("config error:") else f"error: {text}", file=sys.stderr)
        return exc.code


def run_sessions(args: argparse.Namespace) -> int:
    return run_with_settings(lambda settings: _run(args, settings))


# ---- argparse -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_sessions_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sessions = sub.add_parser(
        "sessions", help="list, show, reset or purge thread → ADK session mappings",
        description="The Slack thread → ADK session mappings in Redis (needs REDIS_URL). "
                    "THREAD is a thread key (team:channel:thread_ts; team:channel:dm for a "
                    "top-level DM) or a Slack message link.")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="engaged threads, most recently active first")
    listing.add_argument("--limit", type=_positive_int, default=20,
                         help="how many threads to show (default 20)")
    for name, text in (("show", "one thread's mapping and its ADK session"),
                       ("reset", "start a new ADK session on the thread's next message")):
        action = actions.add_parser(name, help=text)
        action.add_argument("thread", metavar="THREAD", help="thread key or Slack message link")
        action.add_argument("--team", help="the workspace (T…) of a Slack link; default: "
                                           "from Slack auth.test")
    purge = actions.add_parser("purge", help="remove mappings of threads idle for long")
    purge.add_argument("--older-than", required=True, type=duration_arg, metavar="AGE",
                       help="idle for more than AGE: 90m, 12h, 30d or 2w")
    purge.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")

"""`python -m bot evals export`: the answers people rated in Slack, as ADK eval sets.

Every answer voted on since `--since` (the shards' indexes of rated answers) gets its
verdict (the last vote counts); `--rating` picks 👎, 👍 or both, `--channel` some channels.
Each becomes a case built from its ADK session (GET the session), or, when ADK no longer
has it, from the Slack thread; a 👎 without a correction, or a thread that cannot be read,
is skipped with a line saying why. The sets are written to `--out` as
`<name>_down.evalset.json` and `<name>_up.evalset.json` (cases from ADK sessions) and
`<name>_down_from_threads.evalset.json` and `<name>_up_from_threads.evalset.json` (cases
rebuilt from Slack threads), ready for `adk eval`; a set already there is added to, and
loses the cases whose votes changed since.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.web.async_client import AsyncWebClient

from bot.adk.client import AdkClient, AdkError
from bot.cli import duration_arg, parse_duration
from bot.cli.installs import owner_for
from bot.cli.sessions import CliError, run_with_settings
from bot.config import Settings
from bot.message_text import readable_input
from bot.store.connect import REDIS_FAILURES, close_redis, describe_redis, redis_client
from bot.store.feedback import FeedbackStore
from bot.store.installations import split_owner
from bot.store.layout import LayoutError, check_layout
from bot.store.redis_store import Store
from bot.turns import DM_THREAD, BotIdentity, Turn

if TYPE_CHECKING:
    from google.adk.evaluation.eval_case import EvalCase

    from bot.evals.cases import ThreadMessage
    from bot.evals.pseudonyms import Pseudonyms

RATING_CHOICES = ("down", "up", "all")
LATEST_TS = "9999999999.999999"  # after any message: the whole thread
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
THREAD_MESSAGES_LIMIT = 1000  # the most messages read back from one Slack thread
NEEDS_ADK = ("the export builds eval sets with ADK's evaluation models: install the adk "
             "extra (pip install 'adk-slack-bot[adk]', or google-adk)")


def add_evals_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evals = sub.add_parser("evals", help="export the answers rated in Slack as ADK eval sets")
    actions = evals.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export", help="write <name>_down/_up[_from_threads].evalset.json from the rated "
                       "answers",
        description="Builds ADK eval sets (adk eval) from the answers rated in Slack: a 👎 "
                    "with a correction expects the correction, a 👍 the answer given.")
    export.add_argument("--rating", choices=RATING_CHOICES, default="all",
                        help="which verdicts to export (the last vote on an answer counts)")
    export.add_argument("--since", default="7d", type=duration_arg,
                        help="answers voted on within this long, e.g. 7d, 12h (default 7d)")
    export.add_argument("--channel", action="append", default=[], metavar="C…",
                        help="only this channel (may be given more than once)")
    export.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the folder the .evalset.json files are written to")
    export.add_argument("--name", default="slack_feedback",
                        help="the sets' name: <name>_down and <name>_up (default "
                             "slack_feedback)")
    export.add_argument("--keep-names", action="store_true",
                        help="keep people's names and Slack ids instead of pseudonyms")


def run_evals(args: argparse.Namespace) -> int:
    return run_with_settings(lambda settings: _export(args, settings))


SET_KINDS = ("down", "up", "down_from_threads", "up_from_threads")


@dataclass
class Export:
    """What one export found: the cases by set (`down`/`up` from ADK sessions,
    `down_from_threads`/`up_from_threads` rebuilt from Slack), the cases earlier exports
    put in a set they no longer belong to (a vote changed since), and what it skipped."""

    cases: dict[str, list[EvalCase]] = field(default_factory=dict)
    drop: dict[str, set[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def place(self, eval_id: str, rating: str | None, case: EvalCase | None = None, *,
              from_thread: bool = False) -> None:
        """Where an answer's case belongs now: `rating` its verdict (None: none, or nothing
        to expect), `case` this export's case of it (None: not exported this time). It
        leaves every other set, and a set of another rating even when not exported now."""
        kind = None
        if case is not None and rating is not None:
            kind = f"{rating}_from_threads" if from_thread else rating
            self.cases.setdefault(kind, []).append(case)
        for other in SET_KINDS:
            if other == kind:
                continue
            if kind is not None or rating is None or not other.startswith(f"{rating}"):
                self.drop.setdefault(other, set()).add(eval_id)

    def count(self, *, from_thread: bool) -> int:
        return sum(len(cases) for kind, cases in self.cases.items()
                   if kind.endswith("_from_threads") == from_thread)


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from bot.evals.pseudonyms import Pseudonyms

    try:
        import bot.evals.cases  # noqa: F401  (needs google-adk)
    except ImportError as exc:
        raise CliError(NEEDS_ADK, 2) from exc
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out} is not a folder", 2)
    key = settings.eval_pseudonym_key
    pseudonyms = Pseudonyms(key=key.get_secret_value().encode() if key else b"",
                            keep_names=args.keep_names)
    since = time.time() - parse_duration(args.since)
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=30)
    shown = describe_redis(settings)
    from bot.runtime import build_adk

    adk = build_adk(settings)
    try:
        try:
            await client.ping()
            store = Store.from_settings(settings, client)
            await check_layout(client, store.keys, mark=False)  # the export only reads
        except LayoutError as exc:
            raise CliError(str(exc)) from exc
        except REDIS_FAILURES as exc:
            raise CliError(f"cannot reach Redis at {shown} ({exc}); check REDIS_URL") from exc
        feedback = FeedbackStore(client, store.keys, settings.feedback_ttl_days * 86400)
        found = Export()
        slack = SlackThreads(settings, client)
        try:
            for rated in await feedback.rated_since(since):
                await _one(found, rated.thread_key, rated.turn_ts, args, settings,
                           store=store, feedback=feedback, adk=adk, slack=slack,
                           pseudonyms=pseudonyms)
        except REDIS_FAILURES as exc:
            raise CliError(f"Redis at {shown} failed: {exc}") from exc
    finally:
        await adk.aclose()
        await close_redis(client)
    return _write(found, args, f"REDIS_KEY_PREFIX={store.keys.prefix!r} in Redis at {shown}")


async def _one(found: Export, thread_key: str, turn_ts: str, args: argparse.Namespace,
               settings: Settings, *, store: Store, feedback: FeedbackStore, adk: AdkClient,
               slack: SlackThreads, pseudonyms: Pseudonyms) -> None:
    from bot.evals.cases import (
        NotInSession,
        NotReplayable,
        case_from_session,
        case_from_thread,
        eval_id_of,
        verdict,
    )

    parts = thread_key.split(":")
    if len(parts) != 3 or (args.channel and parts[1] not in args.channel):
        return
    rated = verdict(thread_key, turn_ts, await feedback.votes(thread_key, turn_ts))
    where = f"{thread_key} answer to {turn_ts}"
    if rated is None or rated.tied:
        found.place(eval_id_of(thread_key, turn_ts), None)
        if rated is not None:
            found.skipped.append(f"{where}: as many votes up as down ({rated.up} each)")
        return
    if args.rating != "all" and rated.rating != args.rating:
        found.place(rated.eval_id, rated.rating)
        return
    if rated.rating == "down" and not rated.correction:
        found.place(rated.eval_id, None)
        found.skipped.append(f"{where}: voted down without a correction (nothing to expect)")
        return
    thread: ThreadCopy | str | None = None
    if not pseudonyms.keep_names:
        # Everyone in the thread, speakers or mentioned, by every name Slack has for them.
        thread = await slack.read(thread_key)
        if isinstance(thread, str):
            found.notes.append(f"{where}: {thread}, so only the names of the people who "
                               "asked the agent are replaced")
        else:
            for user, names in thread.people.items():
                for name in names:
                    pseudonyms.learn(user, name)
    record = await store.get_thread(thread_key)
    user_id = record.adk_user_id if record is not None else ""
    session_id = rated.session_id or (record.session_id if record is not None else "")
    reason = "the thread's mapping has expired"
    if user_id and session_id:
        try:
            session = await adk.get_session(user_id, session_id)
        except AdkError as exc:
            raise CliError(f"cannot read ADK sessions at {settings.adk_base_url} ({exc})"
                           ) from exc
        reason = f"ADK no longer has session {session_id}"
        if session is not None:
            try:
                found.place(rated.eval_id, rated.rating, case_from_session(
                    session, rated, app_name=settings.adk_app_name, pseudonyms=pseudonyms))
                return
            except NotReplayable:
                found.place(rated.eval_id, rated.rating)
                found.skipped.append(
                    f"{where}: a turn up to it answered the agent's request for an approval "
                    "or input, which adk eval cannot ask again")
                return
            except NotInSession:
                reason = f"session {session_id} does not hold the rated answer"
            except ValueError:  # not a session ADK's own model reads
                reason = f"session {session_id} could not be read as an ADK session"
    if thread is None:
        thread = await slack.read(thread_key)
    # After a reset, the rated answer's conversation starts at the reset.
    reset_at = record.reset_at if record is not None else ""
    after = reset_at if reset_at and float(reset_at) < float(turn_ts) else ""
    case = None if isinstance(thread, str) else case_from_thread(
        [m for m in thread.messages if not after or float(m.ts) > float(after)], rated,
        app_name=settings.adk_app_name, user_id=user_id or f"slack-{parts[0]}-{parts[1]}",
        names=thread.speakers, pseudonyms=pseudonyms)
    if case is None:
        found.place(rated.eval_id, rated.rating)
        why = thread if isinstance(thread, str) else "the Slack thread no longer holds the question"
        found.skipped.append(f"{where}: {reason}, and {why}")
        return
    found.place(rated.eval_id, rated.rating, case, from_thread=True)


_SET_WORDS = {
    "down": "voted down, expecting their corrections",
    "up": "voted up, expecting the answers given",
    "down_from_threads": "voted down, rebuilt from their Slack threads (no tool calls known), "
                         "expecting their corrections",
    "up_from_threads": "voted up, rebuilt from their Slack threads (no tool calls known), "
                       "expecting the answers given",
}


def _write(found: Export, args: argparse.Namespace, source: str) -> int:
    from bot.evals.cases import eval_set, write_eval_set

    total = sum(len(cases) for cases in found.cases.values())
    for line in found.skipped:
        print(f"skipped {line}")
    for line in found.notes:
        print(f"note: {line}")
    if not total:
        print(f"nothing to export: no {_rated_words(args.rating)} answers with what a case "
              f"needs in the last {args.since} under {source}")
    for kind in SET_KINDS:
        cases = found.cases.get(kind, [])
        drop = found.drop.get(kind, set())
        if not cases and not (drop and args.out.is_dir()):
            continue
        try:
            written = write_eval_set(args.out, eval_set(
                f"{args.name}_{kind}", cases,
                description=f"Slack answers {_SET_WORDS[kind]} (last export "
                            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"),
                drop=drop)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:
            raise CliError(f"could not write to {args.out}: {exc}") from exc
        if written is None:
            continue
        earlier = [f"{written.kept} kept from earlier exports"] if written.kept else []
        if written.removed:
            earlier.append(f"{written.removed} removed (their votes changed)")
        print(f"wrote {written.path}: {_cases(len(cases))}"
              + (f", {', '.join(earlier)}" if earlier else ""))
    if total:
        print(f"{_cases(total)}: {found.count(from_thread=False)} from ADK sessions, "
              f"{found.count(from_thread=True)} from Slack threads; "
              f"{len(found.skipped)} skipped")
    return 0


def _cases(n: int) -> str:
    return f"{n} case{'' if n == 1 else 's'}"


def _rated_words(rating: str) -> str:
    return {"down": "voted-down", "up": "voted-up"}.get(rating, "rated")


@dataclass(frozen=True)
class ThreadCopy:
    """A rated answer's Slack thread as the export reads it."""

    messages: list[ThreadMessage]  # oldest first; a person's text as the bot asks it
    speakers: dict[str, str]  # user id -> display name, of those who wrote in it
    people: dict[str, list[str]]  # everyone written by or mentioned: every name they have


class SlackThreads:
    """The Slack threads of rated answers, read back with the bot's token of the thread's
    workspace (SLACK_BOT_TOKEN, or its installation): who is in them (to replace every
    name) and, when ADK no longer has the session, the conversation itself."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._clients: dict[str, tuple[AsyncWebClient, BotIdentity] | str] = {}
        self._threads: dict[str, ThreadCopy | str] = {}
        self._names: dict[tuple[str, str], list[str]] = {}

    async def _client(self, owner: str) -> tuple[AsyncWebClient, BotIdentity] | str:
        if owner not in self._clients:
            try:
                self._clients[owner] = await self._connect(owner)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return f"Slack could not be reached ({type(exc).__name__})"
        return self._clients[owner]

    async def _connect(self, owner: str) -> tuple[AsyncWebClient, BotIdentity] | str:
        settings = self.settings
        if not settings.distributed and settings.slack_bot_token is not None:
            token = settings.slack_bot_token.get_secret_value()
        elif settings.distributed and settings.installation_encryption_key is not None:
            from bot.runtime import installations, sealed_installations

            sealed = sealed_installations(settings, self.redis)
            installed = owner_for(owner, [o for o, _ in await sealed.owners()])
            if installed is None:
                return f"the app is not installed in {owner} to read the thread"
            # A rotating token due for a refresh is refreshed, as the bot would (that
            # needs the client secret).
            finder: AsyncInstallationStore = sealed if settings.slack_client_secret is None \
                else installations(settings, self.redis, AsyncWebClient(
                    base_url=settings.slack_api_url, timeout=10))
            enterprise, team = split_owner(installed)
            bot = await finder.async_find_bot(
                enterprise_id=enterprise, team_id=team, is_enterprise_install=team is None)
            if bot is None or not bot.bot_token:
                return f"the app is not installed in {owner} to read the thread"
            token = bot.bot_token
        else:
            return "there is no Slack token to read the thread with"
        client = AsyncWebClient(token=token, base_url=settings.slack_api_url, timeout=10)
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
        try:
            auth = await client.auth_test()
        except SlackApiError as exc:
            return f"Slack refused the token ({exc.response.get('error')})"
        return client, BotIdentity(user_id=str(auth.get("user_id") or ""),
                                   bot_id=str(auth.get("bot_id") or ""))

    async def _names_of(self, owner: str, client: AsyncWebClient, user: str) -> list[str]:
        """Every name `user` goes by in Slack (display, real and user name)."""
        if (owner, user) not in self._names:
            try:
                found = (await client.users_info(user=user)).get("user") or {}
            except SlackApiError:
                found = {}
            profile = found.get("profile") or {}
            candidates = (profile.get("display_name"), profile.get("real_name"),
                          found.get("real_name"), found.get("name"))
            self._names[(owner, user)] = [
                name.strip() for name in candidates if isinstance(name, str) and name.strip()]
        return self._names[(owner, user)]

    async def read(self, thread_key: str) -> ThreadCopy | str:
        """The thread (read once per export), or why it cannot be read."""
        if thread_key not in self._threads:
            try:
                self._threads[thread_key] = await self._read(thread_key)
            except SlackApiError as exc:
                self._threads[thread_key] = (
                    f"Slack did not return the thread ({exc.response.get('error')})")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._threads[thread_key] = (
                    f"Slack could not be reached ({type(exc).__name__})")
        return self._threads[thread_key]

    async def _read(self, thread_key: str) -> ThreadCopy | str:
        from bot.evals.cases import ThreadMessage
        from bot.slack.thread_reader import SlackThreadReader

        team, channel, thread_ts = thread_key.split(":")
        connected = await self._client(team)
        if isinstance(connected, str):
            return connected
        client, bot = connected
        reader = SlackThreadReader(client, bot)
        turn = Turn(team=team, channel=channel,
                    thread_ts=None if thread_ts == DM_THREAD else thread_ts,
                    ts=LATEST_TS, user="", text="", kind="mention")
        history = await reader.history(turn, LATEST_TS, THREAD_MESSAGES_LIMIT)
        authors = {m.user for m in history if not m.from_self and m.user}
        mentioned = {user for m in history for user in _MENTION.findall(m.text)}
        # One users.info per person: every name they go by, the first as they are shown.
        people = {user: await self._names_of(team, client, user)
                  for user in sorted(authors | mentioned) if user != bot.user_id}
        names = {user: (found[0] if found else user) for user, found in people.items()}
        speakers = {user: names.get(user, user) for user in authors}
        # A person's message as the bot asks it (mentions resolved, its own dropped).
        messages = [ThreadMessage(
            ts=m.ts, user=m.user, from_bot=m.from_self,
            text=m.text if m.from_self else readable_input(
                m.text, bot_user_id=bot.user_id, user_names=names))
            for m in history]
        return ThreadCopy(messages=messages, speakers=speakers, people=people)

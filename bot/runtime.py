"""Build the running bot from Settings: Redis, the store, ADK, Slack, intake and workers.
Start-up checks turn into `StartupError`s with one clear line per problem."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import fakeredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessPolicy, needs_user_groups
from bot.adk.auth import build_auth
from bot.adk.client import AdkClient, AdkError
from bot.app import CountingWebClient, build_bolt_app, build_web_client
from bot.approvals import Approvers
from bot.config import Settings
from bot.conversation import Conversation, ConversationConfig
from bot.intake import Intake
from bot.limits import RateLimit
from bot.memory_budget import MemoryBudget
from bot.metrics import Metrics
from bot.notes import BackgroundNotes
from bot.slack.assistant import register_assistant
from bot.slack.authorize_cache import cache_authorizations
from bot.slack.controls import register_reset_command
from bot.slack.feedback import register_feedback
from bot.slack.install_page import InstallFlow, StateCookieCheck, plain_http_loopback
from bot.slack.replies import SlackThreadIO
from bot.slack.scopes import REQUIRED_SCOPES
from bot.slack.token_refresh import BoltInstallations, RefreshingInstallationStore
from bot.slack.uninstall import register_uninstall
from bot.slack.usergroups import UserGroupResolver
from bot.slack.workspaces import Workspaces, WorkspaceSlack
from bot.stops import Stops
from bot.store.cipher import Cipher, CipherError
from bot.store.connect import bot_redis_client, close_redis, describe_redis, uses_real_redis
from bot.store.feedback import FeedbackStore
from bot.store.heartbeats import Heartbeats
from bot.store.installations import InstallKeys, RedisInstallationStore, split_owner
from bot.store.keys import Keys
from bot.store.layout import LayoutError, check_layout
from bot.store.oauth_state import RedisOAuthStateStore
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import Store, TurnContext
from bot.thread_io import ThreadIO
from bot.turn_replies import crash_text, new_ref
from bot.turns import BotIdentity, Turn
from bot.worker import GiveUp, GiveUpHandler, TurnHandler, Worker, WorkerConfig

log = logging.getLogger("bot.runtime")

NOTES_DRAIN_SECONDS = 5.0  # at shutdown, private notes on their way get this long
# Many workspaces: where "Add to Slack" starts, and where Slack sends the browser back.
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"


class StartupError(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def connect_redis(settings: Settings) -> tuple[aioredis.Redis, bool]:
    """The Redis client of REDIS_MODE, and whether it is the embedded in-process one. A
    dropped connection (Redis restarted, a Sentinel failover) is retried on a fresh one
    (bot/store/connect.py)."""
    problems = settings.redis_problems()
    if problems:
        raise StartupError(problems)
    if uses_real_redis(settings):
        return bot_redis_client(settings), False
    log.warning(
        "REDIS_URL is not set: using an embedded in-process Redis. State is lost when the "
        "process exits and is not shared between replicas."
    )
    return fakeredis.FakeAsyncRedis(decode_responses=True), True


async def check_key_layout(settings: Settings, client: aioredis.Redis) -> None:
    """Refuse to start on keys of another layout (bot/store/layout.py)."""
    try:
        await check_layout(client, Keys(settings.redis_key_prefix, settings.redis_shards))
    except LayoutError as exc:
        raise StartupError([str(exc)]) from exc


def build_store(settings: Settings, client: aioredis.Redis, embedded: bool) -> Store:
    return Store.from_settings(settings, client, wakeup=asyncio.Event() if embedded else None)


def build_adk(settings: Settings) -> AdkClient:
    token = settings.adk_bearer_token.get_secret_value() if settings.adk_bearer_token else ""
    auth = build_auth(settings.adk_auth, bearer_token=token,
                      audience=settings.adk_id_token_audience or settings.adk_base_url)
    return AdkClient(
        settings.adk_base_url, settings.adk_app_name, auth=auth,
        connect_timeout=settings.adk_connect_timeout, run_timeout=settings.turn_timeout_seconds,
    )


async def check_adk_app(adk: AdkClient, app_name: str, wait_seconds: float) -> None:
    """ADK must be reachable and serve the configured app."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            apps = await adk.list_apps()
            break
        except AdkError as exc:
            if asyncio.get_running_loop().time() >= deadline:
                raise StartupError([
                    f"ADK_BASE_URL: cannot reach the ADK api_server at {adk.base_url} ({exc})"
                ]) from exc
            await asyncio.sleep(1.0)
    if app_name not in apps:
        hint = ""
        if "-" in app_name or app_name.replace("-", "_") in apps:
            hint = " Folder-loaded ADK app names use underscores, e.g. finops_cost_data_analyst."
        listed = ", ".join(apps) if apps else "(none)"
        raise StartupError([
            f"ADK_APP_NAME: the ADK server at {adk.base_url} has no app {app_name!r}; "
            f"it serves: {listed}.{hint}"
        ])


async def check_app_token(settings: Settings, client: AsyncWebClient) -> None:
    """Socket Mode's app-level token must open a connection: Slack's Socket Mode client
    would otherwise retry a refused token every few seconds, for ever, while the process
    looks healthy."""
    token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    try:
        await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        raise StartupError([
            f"SLACK_APP_TOKEN: Slack refused apps.connections.open "
            f"({exc.response.get('error')}); it needs an app-level token (xapp-) with the "
            "connections:write scope, and Socket Mode turned on for the app"
        ]) from exc
    except Exception as exc:
        raise StartupError([f"SLACK_API_URL: cannot reach Slack's Web API ({exc})"]) from exc


async def slack_identity(client: AsyncWebClient) -> BotIdentity:
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise StartupError([
            f"SLACK_BOT_TOKEN: Slack refused auth.test ({exc.response.get('error')})"
        ]) from exc
    except Exception as exc:
        raise StartupError([f"SLACK_API_URL: cannot reach Slack's Web API ({exc})"]) from exc
    return BotIdentity(
        user_id=str(response.get("user_id") or ""),
        bot_id=str(response.get("bot_id") or ""),
        team_id=str(response.get("team_id") or ""),
    )


@dataclass
class Bot:
    """Everything one process runs."""

    settings: Settings
    redis: aioredis.Redis
    store: Store
    adk: AdkClient
    metrics: Metrics
    identity: BotIdentity
    intake: Intake
    conversation: Conversation
    worker: Worker
    stops: Stops
    slack_client: AsyncWebClient | None = None
    bolt: AsyncApp | None = None
    notes: BackgroundNotes | None = None
    # The heartbeats' own client (None: they use `redis`).
    heartbeat_redis: aioredis.Redis | None = None

    async def start_workers(self) -> None:
        await self.stops.start()
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop(self.settings.shutdown_grace_seconds)
        await self.stops.stop()
        if self.notes is not None:
            await self.notes.drain(NOTES_DRAIN_SECONDS)
        await self.adk.aclose()
        await self.store.close()
        await close_redis(self.redis)
        if self.heartbeat_redis is not None:
            await close_redis(self.heartbeat_redis)
        if self.slack_client is not None and self.slack_client.session is not None:
            await self.slack_client.session.close()

    async def ready(self) -> dict[str, bool]:
        try:
            redis_ok = await self.store.ping()
        except (RedisError, OSError):
            redis_ok = False
        if self.settings.role == "intake":
            # An intake never calls ADK: an ADK outage must not take it out of the load
            # balancer, since acked events wait in Redis for the workers.
            return {"redis": redis_ok}
        return {"redis": redis_ok, "adk": await self.adk.health()}


def sealed_installations(settings: Settings, client: aioredis.Redis
                         ) -> RedisInstallationStore:
    """The installation store under REDIS_KEY_PREFIX, sealed with
    INSTALLATION_ENCRYPTION_KEY (checked by the settings)."""
    assert settings.installation_encryption_key is not None
    return RedisInstallationStore(
        client, InstallKeys(settings.redis_key_prefix),
        Cipher.from_setting(settings.installation_encryption_key.get_secret_value()))


async def check_installations_open(settings: Settings, client: aioredis.Redis) -> None:
    """The stored installations open with INSTALLATION_ENCRYPTION_KEY (one is tried): a
    wrong key is refused at start, not at every turn."""
    store = sealed_installations(settings, client)
    owners = await store.owners()
    if not owners:
        return
    enterprise, team = split_owner(owners[-1][0])
    try:
        await store.async_find_bot(enterprise_id=enterprise, team_id=team,
                                   is_enterprise_install=team is None)
    except CipherError as exc:
        raise StartupError([
            "INSTALLATION_ENCRYPTION_KEY cannot open the stored installations: set the key "
            "they were sealed with (to replace a key, list the new one first, then the old "
            "one, and run `python -m bot installs rekey`)"]) from exc


def installations(settings: Settings, redis_client: aioredis.Redis,
                  client: AsyncWebClient) -> RefreshingInstallationStore:
    """The installations of a distributable app, sealed in Redis, with rotating tokens
    refreshed through `client` (SLACK_API_URL)."""
    assert settings.slack_client_id and settings.slack_client_secret is not None
    store = sealed_installations(settings, redis_client)
    rotator = AsyncTokenRotator(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(), client=client)
    return RefreshingInstallationStore(store, rotator, minutes=settings.token_refresh_minutes)


def oauth_settings(settings: Settings, installs: RefreshingInstallationStore
                   ) -> AsyncOAuthSettings:
    """Bolt's OAuth flow: "Add to Slack" at /slack/install with the manifest's bot scopes,
    the redirect at /slack/oauth_redirect, one-use states in Redis."""
    assert settings.slack_client_secret is not None
    oauth = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        scopes=sorted(REQUIRED_SCOPES),
        redirect_uri=settings.slack_redirect_uri,
        install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH,
        authorization_url=settings.slack_authorize_url,
        installation_store=BoltInstallations(installs),
        installation_store_bot_only=True,
        token_rotation_expiration_minutes=settings.token_refresh_minutes,
        state_store=RedisOAuthStateStore(installs.redis, settings.redis_key_prefix,
                                         ttl_seconds=settings.oauth_state_ttl_seconds),
        state_expiration_seconds=settings.oauth_state_ttl_seconds,
    )
    oauth.state_utils = StateCookieCheck(cookie_name=oauth.state_cookie_name,
                                         expiration_seconds=settings.oauth_state_ttl_seconds)
    cache_authorizations(oauth.authorize)  # not one auth.test per request
    return oauth


def make_handler(conversation: Conversation, metrics: Metrics) -> TurnHandler:
    async def handle(turn: Turn, context: TurnContext | None = None) -> str:
        if turn.received_at:
            metrics.turn_wait_seconds.observe(max(0.0, time.time() - turn.received_at))
        metrics.turns_running.inc()
        with metrics.turn_seconds.time():
            try:
                outcome = await conversation.handle(turn, context)
            finally:
                metrics.turns_running.dec()
        metrics.turns.labels(outcome).inc()
        if turn.install is not None:
            metrics.workspace_turns.labels(turn.install.owner, outcome).inc()
        return outcome

    return handle


def make_give_up(conversation: Conversation, metrics: Metrics) -> GiveUpHandler:
    """A turn whose attempts kept killing their worker: told so in its thread, not run."""
    async def give_up(turn: Turn, context: TurnContext | None, attempts: int) -> str:
        ref = new_ref()
        log.error("a turn is given up unanswered: trying to answer it stopped the bot %d "
                  "times", attempts, extra={"ref": ref, "thread_key": turn.key, "ts": turn.ts,
                                            "outcome": "given_up"})
        outcome = await conversation.give_up(turn, context, crash_text(attempts, ref))
        metrics.turns.labels(outcome).inc()
        return outcome

    return give_up


@dataclass
class Parts:
    """What Slack mode and the console share."""

    store: Store
    metrics: Metrics
    stops: Stops
    intake: Intake
    conversation: Conversation
    worker: Worker
    notes: BackgroundNotes


def assemble(
    settings: Settings,
    *,
    redis_client: aioredis.Redis,
    embedded: bool,
    adk: AdkClient,
    make_io: Callable[[Store, Metrics], ThreadIO],
    identity: BotIdentity,
    access: AccessPolicy | None = None,
    feedback: bool = True,
    metrics: Metrics | None = None,
    heartbeat_client: aioredis.Redis | None = None,
) -> Parts:
    """The store, conversation, intake and worker, wired. `access`: None for the console,
    which answers everyone (`AccessPolicy.unrestricted`); `heartbeat_client`: the worker
    heartbeats' own Redis client (None: `redis_client`)."""
    store = build_store(settings, redis_client, embedded)
    metrics = metrics or Metrics()
    stops = Stops(store)
    io = make_io(store, metrics)
    rate_limit = RateLimit(settings.user_rate_limit, settings.user_rate_window_seconds)
    conversation = Conversation(
        store, adk, io,
        ConversationConfig.from_settings(settings, bot_user_id=identity.user_id,
                                         feedback=feedback),
        access=access or AccessPolicy.unrestricted(settings), stops=stops, metrics=metrics,
        rate_limiter=UserRateLimiter(redis_client, store.keys, rate_limit)
        if rate_limit.enabled else None,
    )
    # Notes to the authors of messages the intake refuses (Slack: ephemeral), sent after
    # the ack.
    notes = BackgroundNotes(io.tell_privately, metrics)
    # A process that also runs the turns creates a new thread's ADK session while its first
    # turn is queued (an intake-only process leaves that to the worker that takes the turn).
    intake = Intake(store, identity, metrics, stops, max_input_chars=settings.max_input_chars,
                    on_new_thread=conversation.prepare_session if settings.role == "all"
                    else None, access=conversation.access,
                    max_queued_turns=settings.max_queued_turns, notify=notes,
                    user_groups=conversation.io.user_groups, installed=settings.distributed)
    worker = Worker(
        store, make_handler(conversation, metrics),
        WorkerConfig.from_settings(settings, blocking_reads=not embedded),
        heartbeats=Heartbeats(heartbeat_client or redis_client, store.keys,
                              ttl_ms=int(settings.heartbeat_ttl_seconds * 1000)),
        give_up=GiveUp(settings.max_turn_attempts, make_give_up(conversation, metrics)),
        on_takeover=metrics.threads_taken_over.inc,
    )
    return Parts(store, metrics, stops, intake, conversation, worker, notes)


async def build_slack_bot(settings: Settings) -> Bot:
    """Check the settings against the real peers and build the Slack bot."""
    problems = settings.problems_for_serve()
    if problems:
        raise StartupError(problems)
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    client = build_web_client(token, settings.slack_api_url)
    # Many workspaces: who the bot is depends on the installation each event names.
    identity = (BotIdentity(user_id="") if settings.distributed
                else await slack_identity(client))
    if settings.socket_mode and settings.role in ("all", "intake"):
        await check_app_token(settings, client)
    redis_client, embedded = connect_redis(settings)
    try:
        await redis_client.ping()
    except (RedisError, OSError) as exc:
        if settings.redis_mode == "sentinel":
            raise StartupError([f"REDIS_SENTINELS: cannot reach Redis, "
                                f"{describe_redis(settings)} ({exc})"]) from exc
        raise StartupError([f"REDIS_URL: cannot reach Redis ({exc})"]) from exc
    await check_key_layout(settings, redis_client)
    adk = build_adk(settings)
    await check_adk_app(adk, settings.adk_app_name, settings.adk_startup_wait_seconds)
    if settings.distributed:
        await check_installations_open(settings, redis_client)
    # The heartbeats get a connection of their own, so a busy pool never delays them.
    heartbeat_client = None if embedded else connect_redis(settings)[0]
    return build_bot(settings, client=client, identity=identity, redis_client=redis_client,
                     embedded=embedded, adk=adk, heartbeat_client=heartbeat_client)


def build_bot(
    settings: Settings,
    *,
    client: AsyncWebClient,
    identity: BotIdentity,
    redis_client: aioredis.Redis,
    embedded: bool,
    adk: AdkClient,
    heartbeat_client: aioredis.Redis | None = None,
) -> Bot:
    """The Slack bot from its parts, with no checks against the peers."""
    metrics = Metrics()
    stream_client = build_web_client(client.token or "", client.base_url, wait_on_429=False,
                                     session=client.session)
    installs = installations(settings, redis_client, client) if settings.distributed else None
    for slack_client in (client, stream_client):
        if isinstance(slack_client, CountingWebClient):
            slack_client.attach_metrics(metrics)
    access = AccessPolicy.from_settings(settings)
    approvers = Approvers.from_settings(settings)
    groups = (UserGroupResolver.for_policy(client, access, also=approvers.usergroups)
              if needs_user_groups(access) or approvers.usergroups else None)
    # One budget for the attached files of all the process's turns.
    file_memory = MemoryBudget(settings.max_attachment_memory_bytes)

    def client_for(token: str) -> AsyncWebClient:
        """An installation's client, sharing the process's connections."""
        return build_web_client(token, client.base_url, session=client.session,
                                metrics=metrics, installation=True)

    def make_workspace(token: str, bot: BotIdentity) -> WorkspaceSlack:
        """An installation's clients."""
        return WorkspaceSlack(client_for(token), bot, stream_client=build_web_client(
            token, client.base_url, wait_on_429=False, session=client.session,
            metrics=metrics, installation=True))

    def make_groups(ws_client: AsyncWebClient, workspace: str | None) -> UserGroupResolver:
        return UserGroupResolver.for_policy(ws_client, access, also=approvers.usergroups,
                                            elsewhere_empty=True, team_id=workspace)

    workspaces = (Workspaces(installations=installs, make=make_workspace,
                             make_groups=make_groups if groups is not None else None,
                             groups_seconds=max(float(settings.usergroup_cache_seconds), 60.0))
                  if installs is not None else None)

    def make_io(store: Store, metrics: Metrics) -> ThreadIO:
        return SlackThreadIO.from_settings(
            settings, client, identity, store=store, metrics=metrics,
            stream_client=stream_client, groups=groups, file_memory=file_memory,
            workspaces=workspaces,
        )

    parts = assemble(settings, redis_client=redis_client, embedded=embedded, adk=adk,
                     make_io=make_io, identity=identity, access=access, metrics=metrics,
                     heartbeat_client=heartbeat_client)
    feedback_store = FeedbackStore(redis_client, parts.store.keys,
                                   ttl_seconds=settings.feedback_ttl_days * 86400)
    bolt = build_bolt_app(
        client, parts.intake, parts.stops,
        extras=[
            lambda app: register_feedback(app, store=feedback_store, metrics=parts.metrics,
                                          controls=parts.intake.controls),
            lambda app: register_assistant(app, prompts=settings.assistant_prompts,
                                           title=settings.assistant_title),
            lambda app: register_reset_command(app, parts.store, parts.intake.controls,
                                               installed=settings.distributed),
            *([lambda app: register_uninstall(app, installations=installs,
                                              forget=workspaces.forget)]
              if installs is not None and workspaces is not None else []),
        ],
        oauth=InstallFlow(client=client, settings=oauth_settings(settings, installs),
                          title=settings.assistant_title or "the agent",
                          plain_http=plain_http_loopback(settings.slack_redirect_uri))
        if installs is not None else None,
        client_for=client_for if installs is not None else None,
    )
    return Bot(
        settings=settings, redis=redis_client, store=parts.store,
        adk=adk, metrics=parts.metrics, identity=identity, intake=parts.intake,
        conversation=parts.conversation, worker=parts.worker, stops=parts.stops,
        slack_client=client, bolt=bolt, notes=parts.notes, heartbeat_redis=heartbeat_client,
    )

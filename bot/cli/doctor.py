"""`python -m bot doctor`: check the settings, Slack (token, scopes, Socket Mode), Redis and
ADK, and say what to fix. Every check runs even when an earlier one failed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adk.client import AdkAuthError, AdkClient, AdkError, AdkRefused, AdkServerError
from bot.config import Settings, describe_validation_error, encryption_key_problem
from bot.slack.scopes import (
    FIX_SCOPES,
    REQUIRED_SCOPES,
    missing_scopes,
    parse_scopes,
    unneeded_missing_scopes,
)
from bot.store.cipher import Cipher, CipherError
from bot.store.connect import (
    REDIS_FAILURES,
    close_redis,
    describe_redis,
    redis_client,
    uses_real_redis,
)
from bot.store.installations import InstallKeys, RedisInstallationStore, split_owner
from bot.store.keys import Keys
from bot.store.thread_index import ThreadIndex


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"
    SKIPPED = "skipped"  # not applicable, or not checkable because an earlier check failed


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    fix: str = ""


def symbols(encoding: str | None) -> dict[Status, str]:
    """✓ ✗ ! - where the terminal can show them, else ASCII."""
    try:
        "✓✗".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return {Status.OK: "ok", Status.PROBLEM: "XX", Status.WARNING: "!!",
                Status.SKIPPED: "--"}
    return {Status.OK: "✓", Status.PROBLEM: "✗", Status.WARNING: "!", Status.SKIPPED: "-"}


def render_results(results: Sequence[CheckResult], *, encoding: str | None = "utf-8") -> str:
    """One line per check (symbol, name, summary); details and the fix indented below."""
    marks = symbols(encoding)
    width = max((len(r.name) for r in results), default=0)
    mark_width = max(len(m) for m in marks.values())
    indent = " " * (mark_width + 1 + width + 2)
    lines: list[str] = []
    for result in results:
        mark = marks[result.status].ljust(mark_width)
        lines.append(f"{mark} {result.name.ljust(width)}  {result.summary}".rstrip())
        lines.extend(f"{indent}{detail}" for detail in result.details)
        if result.fix:
            lines.append(f"{indent}fix: {result.fix}")
    problems = sum(r.status is Status.PROBLEM for r in results)
    warnings = sum(r.status is Status.WARNING for r in results)
    lines.append("")
    if problems == 0 and warnings == 0:
        lines.append("All checks passed.")
    else:
        counts = [f"{problems} problem{'s' if problems != 1 else ''}"]
        counts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
        lines.append(", ".join(counts) + ("." if problems else "; nothing blocks the bot."))
    return "\n".join(lines)


def results_json(results: Sequence[CheckResult]) -> str:
    data = {
        "ok": all(r.status is not Status.PROBLEM for r in results),
        "problems": sum(r.status is Status.PROBLEM for r in results),
        "warnings": sum(r.status is Status.WARNING for r in results),
        "checks": [{**asdict(r), "details": list(r.details)} for r in results],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def exit_code(results: Sequence[CheckResult]) -> int:
    return 1 if any(r.status is Status.PROBLEM for r in results) else 0


# ---- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    invalid: frozenset[str]  # field names whose value was invalid (defaults used instead)
    errors: tuple[str, ...]


def load_settings() -> LoadedSettings:
    """The settings; invalid values are reported and replaced by their defaults, so that the
    other checks can still run (those that depend on an invalid value are skipped)."""
    try:
        return LoadedSettings(Settings(), frozenset(), ())
    except ValidationError as exc:
        errors = tuple(describe_validation_error(exc))
        invalid = frozenset(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
    fields = Settings.model_fields
    overrides = {name: fields[name].get_default(call_default_factory=True)
                 for name in invalid if name in fields}
    try:
        settings = Settings(**overrides)
    except ValidationError:
        settings = Settings.model_construct()
    return LoadedSettings(settings, invalid, errors)


def check_settings(loaded: LoadedSettings) -> CheckResult:
    settings = loaded.settings
    problems = [*loaded.errors, *settings.problems_for_serve()]
    mode = ("Socket Mode" if settings.socket_mode
            else f"HTTP mode on {settings.host}:{settings.port}")
    if problems:
        return CheckResult(
            "settings", Status.PROBLEM,
            f"{len(problems)} invalid or missing value{'s' if len(problems) != 1 else ''}",
            tuple(problems),
            "set them in the environment or in .env (see .env.example and the README)",
        )
    return CheckResult("settings", Status.OK, f"valid; serve runs in {mode}")


def _blocked(name: str, loaded: LoadedSettings, fields: Sequence[str]) -> CheckResult | None:
    bad = [f.upper() for f in fields if f in loaded.invalid]
    if not bad:
        return None
    return CheckResult(name, Status.SKIPPED,
                       f"not checked: {', '.join(bad)} is invalid (see settings)")


# ---- Slack ----------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list) and value else value)
    return None


async def check_slack(loaded: LoadedSettings) -> tuple[CheckResult, CheckResult]:
    """auth.test, then the scopes it reports; with many workspaces, the installations."""
    settings = loaded.settings
    if settings.distributed:
        return await check_installations(loaded)
    blocked = _blocked("Slack auth", loaded, ("slack_bot_token", "slack_api_url"))
    if blocked:
        return blocked, CheckResult("Slack scopes", Status.SKIPPED, "not checked: no auth.test")
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    if not token:
        return (
            CheckResult("Slack auth", Status.PROBLEM, "SLACK_BOT_TOKEN is not set",
                        fix="install the app (Install App) and copy the Bot User OAuth Token "
                            "(xoxb-…) into SLACK_BOT_TOKEN"),
            CheckResult("Slack scopes", Status.SKIPPED, "not checked: no bot token"),
        )
    client = AsyncWebClient(token=token, base_url=settings.slack_api_url, timeout=10)
    try:
        response = await client.auth_test()
    except Exception as exc:
        return (_auth_failure(exc, settings.slack_api_url),
                CheckResult("Slack scopes", Status.SKIPPED, "not checked: auth.test failed"))
    team = f"{response.get('team') or '?'} ({response.get('team_id') or '?'})"
    user = f"@{response.get('user') or '?'} ({response.get('user_id') or '?'})"
    auth = CheckResult("Slack auth", Status.OK,
                       f"team {team}, bot user {user}, bot id {response.get('bot_id') or '?'}")
    return auth, scopes_result(_header(response.headers, "x-oauth-scopes"), settings)


async def check_installations(loaded: LoadedSettings) -> tuple[CheckResult, CheckResult]:
    """Many workspaces: every installation can be opened with INSTALLATION_ENCRYPTION_KEY,
    and which of them lack scopes the settings need."""
    settings = loaded.settings
    secret = settings.installation_encryption_key
    key = secret.get_secret_value() if secret else ""
    if not key or encryption_key_problem(key) or not uses_real_redis(settings):
        return (CheckResult("Slack installations", Status.SKIPPED,
                            "not checked: see settings (the key or REDIS_URL)"),
                CheckResult("Slack scopes", Status.SKIPPED, "not checked"))
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=10)
    store = RedisInstallationStore(client, InstallKeys(settings.redis_key_prefix),
                                   Cipher.from_setting(key))
    opened: list[tuple[str, str]] = []  # (workspace, its scopes)
    unreadable: list[str] = []
    try:
        for owner, _ in await store.owners():
            enterprise, team = split_owner(owner)
            try:
                bot = await store.async_find_bot(enterprise_id=enterprise, team_id=team,
                                                 is_enterprise_install=team is None)
            except CipherError:
                unreadable.append(team or enterprise or owner)
                continue
            if bot is not None:
                scopes = bot.bot_scopes  # slack_sdk keeps them as a list
                opened.append((team or enterprise or owner,
                               scopes if isinstance(scopes, str) else ",".join(scopes or [])))
    except REDIS_FAILURES as exc:
        return (CheckResult("Slack installations", Status.SKIPPED,
                            f"not checked: Redis failed ({type(exc).__name__})"),
                CheckResult("Slack scopes", Status.SKIPPED, "not checked"))
    finally:
        await close_redis(client)
    if unreadable:
        installs = CheckResult(
            "Slack installations", Status.PROBLEM,
            f"{len(unreadable)} installation(s) cannot be opened with "
            "INSTALLATION_ENCRYPTION_KEY", tuple(unreadable),
            "set the key they were sealed with (first, or after the new one)")
    else:
        installs = CheckResult(
            "Slack installations", Status.OK if opened else Status.WARNING,
            f"{len(opened)} installed workspace(s) or org(s); OAuth at /slack/install"
            if opened else "none yet: open /slack/install to install the app")
    lacking = [f"{ws}: {', '.join(s for s, _ in missing_scopes(parse_scopes(scopes), settings))}"
               for ws, scopes in opened if missing_scopes(parse_scopes(scopes), settings)]
    scopes_check = (CheckResult("Slack scopes", Status.WARNING,
                                f"{len(lacking)} installation(s) lack scopes", tuple(lacking),
                                "install the app again in those workspaces (/slack/install)")
                    if lacking else
                    CheckResult("Slack scopes", Status.OK,
                                "every installation has the scopes the settings need"))
    return installs, scopes_check


def _auth_failure(exc: Exception, api_url: str) -> CheckResult:
    """What a failed auth.test says: Slack refused the token, or Slack could not be reached."""
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if exc.response is not None else "unknown"
        return CheckResult("Slack auth", Status.PROBLEM, f"Slack refused the bot token ({error})",
                           fix="copy the current Bot User OAuth Token (xoxb-…) from Install App "
                               "into SLACK_BOT_TOKEN; reinstall the app if it was revoked")
    return CheckResult("Slack auth", Status.PROBLEM,
                       f"cannot reach Slack's Web API at {api_url} "
                       f"({type(exc).__name__}: {exc})",
                       fix="check the network (proxy, firewall) and SLACK_API_URL")


def scopes_result(header: str | None, settings: Settings) -> CheckResult:
    """The scopes check, from auth.test's X-OAuth-Scopes header (None: not sent)."""
    if header is None:
        return CheckResult(
            "Slack scopes", Status.WARNING, "Slack did not report the granted scopes",
            details=(f"needed: {', '.join(sorted(REQUIRED_SCOPES))}",),
            fix="compare them with OAuth & Permissions → Bot Token Scopes",
        )
    granted = parse_scopes(header)
    missing = missing_scopes(granted, settings)
    unneeded = unneeded_missing_scopes(granted, settings)
    if missing:
        n = len(missing)
        return CheckResult(
            "Slack scopes", Status.PROBLEM,
            f"{n} needed scope{'s are' if n != 1 else ' is'} not granted",
            tuple(f"{scope} — {why}" for scope, why in missing)
            + tuple(f"{scope} (not needed now: {why})" for scope, why in unneeded),
            FIX_SCOPES.replace("add it", "add them") if n != 1 else FIX_SCOPES,
        )
    if unneeded:
        return CheckResult(
            "Slack scopes", Status.WARNING,
            f"the needed scopes are granted; {len(unneeded)} optional one(s) are not",
            tuple(f"{scope} — {why}" for scope, why in unneeded),
        )
    return CheckResult("Slack scopes", Status.OK, f"all {len(REQUIRED_SCOPES)} scopes granted")


async def check_socket_mode(loaded: LoadedSettings) -> CheckResult:
    name = "Socket Mode"
    blocked = _blocked(name, loaded, ("slack_app_token", "slack_api_url"))
    if blocked:
        return blocked
    settings = loaded.settings
    if not settings.socket_mode or settings.slack_app_token is None:
        return CheckResult(name, Status.SKIPPED,
                           "not used: SLACK_APP_TOKEN is not set, serve uses HTTP mode")
    client = AsyncWebClient(base_url=settings.slack_api_url, timeout=10)
    fix = ("generate an app-level token with connections:write (Basic Information → "
           "App-Level Tokens), put it in SLACK_APP_TOKEN, and enable Socket Mode")
    try:
        await client.apps_connections_open(
            app_token=settings.slack_app_token.get_secret_value())
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown"
        return CheckResult(name, Status.PROBLEM,
                           f"Slack refused the app token in apps.connections.open ({error})",
                           fix=fix)
    except Exception as exc:
        return CheckResult(name, Status.PROBLEM,
                           f"cannot reach Slack ({type(exc).__name__}: {exc})",
                           fix="check the network (proxy, firewall) and SLACK_API_URL")
    return CheckResult(name, Status.OK, "the app token opens a Socket Mode connection")


# ---- Redis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelView:
    """What the Sentinels say of the primary: a line per Sentinel, the primary's address
    (None when none of them names one), the replicas they see up, and what is wrong."""

    lines: tuple[str, ...]
    primary: str | None
    replicas: int
    problem: str = ""
    warning: str = ""


async def _ask_sentinel(settings: Settings, host: str, port: int
                        ) -> tuple[str, str | None, int]:
    """(a line, the primary's address or None, replicas up) from one Sentinel."""
    name = settings.redis_sentinel_master or ""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    password = settings.redis_sentinel_password
    client = aioredis.Redis(
        host=host, port=port, socket_connect_timeout=3, socket_timeout=5,
        decode_responses=True,
        password=password.get_secret_value() if password is not None else None)
    try:
        # SENTINEL MASTER and SENTINEL REPLICAS:
        # https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/#sentinel-api
        try:
            state = cast("dict[str, Any]", await client.sentinel_master(name))
            replicas = await client.sentinel_slaves(name)
        except ResponseError as exc:
            return f"Sentinel {shown}: does not monitor {name!r} ({exc})", None, 0
        except REDIS_FAILURES as exc:
            return f"Sentinel {shown}: unreachable ({exc})", None, 0
    finally:
        await client.aclose()
    up = sum(1 for r in replicas if not r.get("is_sdown") and not r.get("is_odown"))
    if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
        return f"Sentinel {shown}: sees {name!r} down", None, up
    primary = f"{state.get('ip')}:{state.get('port')}"
    return (f"Sentinel {shown}: primary {name!r} at {primary}, {up} replica(s) up, "
            f"{state.get('num-other-sentinels', 0)} other Sentinel(s), quorum "
            f"{state.get('quorum', '?')}", primary, up)


async def sentinel_view(settings: Settings) -> SentinelView:
    """Every Sentinel of REDIS_SENTINELS asked for REDIS_SENTINEL_MASTER."""
    answers = await asyncio.gather(*(_ask_sentinel(settings, host, port)
                                     for host, port in settings.sentinel_addresses()))
    lines = tuple(line for line, _, _ in answers)
    primaries = {primary for _, primary, _ in answers if primary}
    replicas = max((up for _, primary, up in answers if primary), default=0)
    if not primaries:
        return SentinelView(lines, None, 0, problem="no Sentinel names a primary for "
                            f"{settings.redis_sentinel_master!r}")
    primary = sorted(primaries)[0]
    needed = settings.redis_min_replicas
    if needed > replicas:
        return SentinelView(lines, primary, replicas, problem=(
            f"REDIS_MIN_REPLICAS={needed} but the Sentinels see {replicas} replica(s) up: "
            "every event would be refused"))
    warnings = []
    if len(primaries) > 1:
        warnings.append("the Sentinels disagree on the primary (a failover under way?)")
    if any(primary is None for _, primary, _ in answers):
        warnings.append("not every Sentinel answered")
    if replicas == 0:
        warnings.append("no replica is up: a failover has nothing to promote")
    return SentinelView(lines, primary, replicas, warning="; ".join(warnings))


async def check_redis(loaded: LoadedSettings) -> CheckResult:
    name = "Redis"
    blocked = _blocked(name, loaded, ("redis_url", "redis_key_prefix", "redis_mode",
                                      "redis_sentinels", "redis_sentinel_master"))
    if blocked:
        return blocked
    settings = loaded.settings
    view: SentinelView | None = None
    if settings.redis_problems():
        return CheckResult(name, Status.PROBLEM, "; ".join(settings.redis_problems()),
                           fix="set them in the environment or in .env (docs/operations.md)")
    if settings.redis_mode == "sentinel":
        view = await sentinel_view(settings)
        if view.problem:
            return CheckResult(name, Status.PROBLEM, view.problem, view.lines,
                               "check REDIS_SENTINELS, REDIS_SENTINEL_MASTER and "
                               "REDIS_SENTINEL_PASSWORD, and that the Sentinels run")
    elif not settings.redis_url:
        return CheckResult(
            name, Status.WARNING, "REDIS_URL is not set: serve uses an embedded in-process Redis",
            ("thread mappings and queued turns are lost when the process exits,",
             "and replicas do not share them"),
            "set REDIS_URL (e.g. redis://localhost:6379/0) for anything but a trial",
        )
    shown = (f"{settings.redis_sentinel_master!r} at {view.primary} "
             f"(Sentinel, {view.replicas} replica(s))" if view is not None
             else describe_redis(settings))
    try:
        client = redis_client(settings, socket_connect_timeout=3, socket_timeout=5)
    except ValueError as exc:
        return CheckResult(name, Status.PROBLEM, f"REDIS_URL is not a Redis URL ({exc})",
                           fix="use redis://host:6379/0 or rediss://… for TLS")
    result = await _check_server(client, settings, shown)
    if view is None:
        return result
    details = (*view.lines, *result.details)
    if view.warning and result.status is Status.OK:
        return CheckResult(name, Status.WARNING, f"{result.summary}; {view.warning}", details,
                           result.fix or "see docs/operations.md (Redis Sentinel)")
    return CheckResult(name, result.status, result.summary, details, result.fix)


async def _connected_replicas(client: aioredis.Redis) -> int:
    """The replicas connected to this primary (INFO replication, connected_slaves)."""
    try:
        info = await client.info("replication")
    except REDIS_FAILURES:
        return 0
    return int(info.get("connected_slaves", 0) or 0)


async def _check_server(client: aioredis.Redis, settings: Settings, shown: str) -> CheckResult:
    """The Redis server itself: reachable, its version, the threads indexed, persistence."""
    name = "Redis"
    try:
        try:
            await client.ping()
            server = await client.info("server")
            threads = await ThreadIndex(
                client, Keys(settings.redis_key_prefix, settings.redis_shards), 0
            ).thread_count()
        except REDIS_FAILURES as exc:
            return CheckResult(name, Status.PROBLEM, f"cannot reach Redis at {shown} ({exc})",
                               fix="start Redis, or set REDIS_URL to a Redis this host can "
                                   "reach (redis://host:6379/0)")
        version = server.get("redis_version", "?")
        summary = f"{shown}: Redis {version}, {threads} thread(s) indexed"
        if settings.redis_min_replicas:
            replicas = await _connected_replicas(client)
            summary += f", {replicas} replica(s) connected"
            if replicas < settings.redis_min_replicas:
                return CheckResult(
                    name, Status.PROBLEM, summary,
                    (f"REDIS_MIN_REPLICAS={settings.redis_min_replicas}: every event would "
                     "be refused until that many replicas confirm it",),
                    "start the replicas, or lower REDIS_MIN_REPLICAS")
        try:
            appendonly = (await client.config_get("appendonly")).get("appendonly", "")
            save = (await client.config_get("save")).get("save", "")
        except ResponseError:
            return CheckResult(name, Status.OK, summary,
                               ("persistence not checked: this Redis refuses CONFIG GET "
                                "(usual on managed Redis)",))
        except REDIS_FAILURES as exc:
            return CheckResult(name, Status.OK, summary,
                               (f"persistence not checked ({exc})",))
        if appendonly != "yes" and not str(save).strip():
            return CheckResult(
                name, Status.WARNING, summary + "; persistence is off",
                ("a Redis restart forgets every thread mapping and queued turn",),
                "enable AOF (CONFIG SET appendonly yes, and in redis.conf) or RDB snapshots "
                "(save 3600 1 300 100)",
            )
        kinds = [k for k, on in (("AOF", appendonly == "yes"), ("RDB", bool(str(save).strip())))
                 if on]
        return CheckResult(name, Status.OK, f"{summary}; persistence: {' + '.join(kinds)}")
    finally:
        await close_redis(client)


# ---- ADK ------------------------------------------------------------------------------


async def _adk_version(adk: AdkClient) -> str:
    version = await adk.version()  # through the client, so that ADK_AUTH applies
    return f"ADK {version}" if version else ""


async def check_adk(loaded: LoadedSettings) -> CheckResult:
    name = "ADK"
    blocked = _blocked(name, loaded, ("adk_base_url", "adk_app_name", "adk_connect_timeout",
                                      "adk_auth", "adk_bearer_token", "adk_id_token_audience"))
    if blocked:
        return blocked
    from bot.runtime import build_adk

    settings = loaded.settings
    base_url, app_name = settings.adk_base_url, settings.adk_app_name
    try:
        adk = build_adk(settings)
    except Exception as exc:
        return CheckResult(name, Status.PROBLEM, f"cannot set up the ADK client ({exc})",
                           fix="check ADK_AUTH and its settings")
    try:
        try:
            apps = await adk.list_apps()
        except (AdkAuthError, AdkRefused, AdkServerError) as exc:
            if isinstance(exc, AdkAuthError):
                fix = "check ADK_AUTH and ADK_BEARER_TOKEN (or the Google credentials)"
            elif isinstance(exc, AdkRefused):
                fix = ("start ADK with --host 0.0.0.0 (it refuses other hosts when bound to "
                       "loopback) or reach it by 127.0.0.1")
            else:
                fix = "check the ADK api_server's log"
            return CheckResult(name, Status.PROBLEM,
                               f"the ADK api_server at {base_url} refused /list-apps ({exc})",
                               fix=fix)
        except AdkError as exc:
            return CheckResult(
                name, Status.PROBLEM, f"unreachable: {exc}",
                fix="start it (adk api_server path/to/agents; make adk for the demo agent) "
                    "or set ADK_BASE_URL to where it runs",
            )
        version = await _adk_version(adk)
    finally:
        await adk.aclose()
    suffix = f" ({version})" if version else ""
    if app_name not in apps:
        details = [f"it serves: {', '.join(apps) if apps else '(no apps)'}"]
        if "-" in app_name or app_name.replace("-", "_") in apps or any("_" in a for a in apps):
            details.append("folder-loaded ADK app names are the agent folder's name, "
                           "with underscores (e.g. finops_cost_data_analyst)")
        fix = (f"set ADK_APP_NAME={apps[0]}" if len(apps) == 1
               else "set ADK_APP_NAME to one of the apps it serves" if apps
               else "start adk api_server with the folder that holds your agent")
        return CheckResult(name, Status.PROBLEM,
                           f"{base_url} has no app {app_name!r}{suffix}", tuple(details), fix)
    return CheckResult(name, Status.OK, f"{base_url} serves {app_name!r}{suffix}")


# ---- the command ----------------------------------------------------------------------


async def run_checks() -> list[CheckResult]:
    loaded = load_settings()
    (auth, scopes), socket, redis_result, adk_result = await asyncio.gather(
        check_slack(loaded), check_socket_mode(loaded), check_redis(loaded), check_adk(loaded),
    )
    return [check_settings(loaded), auth, scopes, socket, redis_result, adk_result]


def run_doctor(*, as_json: bool = False) -> int:
    results = asyncio.run(run_checks())
    if as_json:
        print(results_json(results))
    else:
        print(render_results(results, encoding=sys.stdout.encoding))
    return exit_code(results)

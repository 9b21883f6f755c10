"""`python -m bot doctor` and `python -m bot sessions …` as real subprocesses, against the
real Redis, a real `adk api_server` and a fake Slack running in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.store.redis_store import Store
from tests.conftest import REAL_REDIS_URL
from tests.fakes.adk_server import AdkServer, closed_port, free_port
from tests.fakes.fake_slack import DEFAULT_SCOPES, FakeSlack
from tests.integration.harness import PROXY_VARS, REPO
from tests.settings import default_store

ALL_SCOPES = (*DEFAULT_SCOPES, "commands", "usergroups:read")
SETTING_VARS = {name.upper() for name in Settings.model_fields}


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0
                  ) -> tuple[int, str, str]:
    """Run `python -m bot ARGS` without blocking the loop (FakeSlack runs in it)."""
    base = {k: v for k, v in os.environ.items()
            if k not in PROXY_VARS and k not in SETTING_VARS}
    base.update({"PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8", **env})
    with tempfile.TemporaryDirectory() as cwd:  # no .env is read
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=cwd, env=base,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(slack: FakeSlack, adk: AdkServer, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "secret",
        "SLACK_API_URL": slack.base_url, "ADK_BASE_URL": adk.base_url,
        "ADK_APP_NAME": "test_agent", "REDIS_URL": REAL_REDIS_URL, "REDIS_KEY_PREFIX": prefix,
        **{k.upper(): v for k, v in extra.items()},
    }


@pytest.fixture
async def full_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(scopes=ALL_SCOPES)
    await fake.start()
    yield fake
    await fake.stop()


def line_of(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line[2:].startswith(name))


# ---- doctor ---------------------------------------------------------------------------


async def test_doctor_all_green(full_slack: FakeSlack, adk: AdkServer, prefix: str,
                                real_redis: aioredis.Redis) -> None:
    env = cli_env(full_slack, adk, prefix, slack_app_token=full_slack.app_token)
    code, out, err = await run_cli("doctor", env=env)
    assert code == 0, out + err
    assert "✗" not in out
    assert line_of(out, "settings").startswith("✓")
    assert "Socket Mode" in line_of(out, "settings")
    auth = line_of(out, "Slack auth")
    assert auth.startswith("✓")
    assert "Test Team (T0001)" in auth and "UBOT" in auth and "BBOT" in auth
    assert line_of(out, "Slack scopes").startswith("✓")
    assert line_of(out, "Socket Mode").startswith("✓")
    redis_line = line_of(out, "Redis")
    assert redis_line[0] in "✓!" and "Redis " in redis_line  # persistence may be off locally
    adk_line = line_of(out, "ADK")
    assert adk_line.startswith("✓") and "'test_agent'" in adk_line and "(ADK " in adk_line
    assert full_slack.bot_token not in out + err and full_slack.app_token not in out + err
    assert any(c.method == "apps.connections.open" for c in full_slack.calls)

    code, out, _ = await run_cli("doctor", "--json", env=env)
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["problems"] == 0
    assert [c["name"] for c in data["checks"]] == [
        "settings", "Slack auth", "Slack scopes", "Socket Mode", "Redis", "ADK"]


async def test_doctor_names_a_missing_scope(adk: AdkServer, prefix: str,
                                            real_redis: aioredis.Redis) -> None:
    async with FakeSlack(scopes=[s for s in ALL_SCOPES if s != "files:write"]) as slack:
        code, out, err = await run_cli("doctor", env=cli_env(slack, adk, prefix))
    assert code == 1, out + err
    assert line_of(out, "Slack scopes").startswith("✗")
    assert "files:write — uploading the agent's files" in out
    assert "fix: add it in OAuth & Permissions (Bot Token Scopes) and reinstall the app" in out
    assert line_of(out, "Slack auth").startswith("✓")
    assert line_of(out, "ADK").startswith("✓")  # the other checks still ran


async def test_doctor_without_optional_scope_only_warns(adk: AdkServer, prefix: str,
                                                        real_redis: aioredis.Redis) -> None:
    async with FakeSlack(scopes=[s for s in ALL_SCOPES if s != "usergroups:read"]) as slack:
        code, out, _ = await run_cli("doctor", env=cli_env(slack, adk, prefix))
        assert code == 0, out
        assert line_of(out, "Slack scopes").startswith("!")
        assert "usergroups:read — only needed if ACCESS_ALLOWED_USERGROUPS" in out
        env = cli_env(slack, adk, prefix, access_denied_usergroups="S123")
        code, out, _ = await run_cli("doctor", env=env)
    assert code == 1
    assert "usergroups:read — members of the user groups" in out


async def test_doctor_wrong_app_name_lists_the_apps(full_slack: FakeSlack, adk: AdkServer,
                                                    prefix: str, real_redis: aioredis.Redis
                                                    ) -> None:
    env = cli_env(full_slack, adk, prefix, adk_app_name="finops")
    code, out, _ = await run_cli("doctor", env=env)
    assert code == 1
    assert line_of(out, "ADK").startswith("✗")
    assert "has no app 'finops'" in out
    # tests/adk_agents holds two agents (test_agent, llm_usage_agent).
    assert "it serves: llm_usage_agent, test_agent" in out
    assert "fix: set ADK_APP_NAME to one of the apps it serves" in out

    env = cli_env(full_slack, adk, prefix, adk_app_name="test-agent")
    code, out, _ = await run_cli("doctor", env=env)
    assert code == 1
    assert "ADK_APP_NAME: ADK app names are Python identifiers" in out
    assert "'test_agent'" in out
    assert line_of(out, "ADK").startswith("-")  # not checked with an invalid name


async def test_doctor_redis_unreachable(full_slack: FakeSlack, adk: AdkServer, prefix: str
                                        ) -> None:
    with closed_port() as port:  # nothing listens there
        env = cli_env(full_slack, adk, prefix, redis_url=f"redis://:pw@127.0.0.1:{port}/0")
        code, out, err = await run_cli("doctor", env=env)
    assert code == 1, out + err
    redis_line = line_of(out, "Redis")
    assert redis_line.startswith("✗") and "cannot reach Redis" in redis_line
    assert ":***@127.0.0.1" in redis_line and ":pw@" not in out
    assert "fix: start Redis, or set REDIS_URL" in out
    assert "Traceback" not in out + err
    assert line_of(out, "Slack auth").startswith("✓")


async def test_doctor_bad_token_and_unreachable_adk(full_slack: FakeSlack, prefix: str,
                                                    real_redis: aioredis.Redis) -> None:
    with closed_port() as port:  # no ADK there
        env = {**cli_env(full_slack, AdkServer(port=port), prefix),
               "SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_APP_TOKEN": "xapp-wrong"}
        code, out, err = await run_cli("doctor", env=env)
    assert code == 1, out + err
    assert "Slack refused the bot token (invalid_auth)" in line_of(out, "Slack auth")
    assert line_of(out, "Slack scopes").startswith("-")
    assert "apps.connections.open (invalid_auth)" in line_of(out, "Socket Mode")
    assert line_of(out, "ADK").startswith("✗") and "make adk" in out
    assert "xoxb-wrong" not in out + err


async def test_serve_refuses_a_wrong_app_token_at_start_up(full_slack: FakeSlack, adk: AdkServer,
                                                          prefix: str, real_redis: object
                                                          ) -> None:
    """Slack's Socket Mode client would retry a refused app token for ever while the
    process looked healthy; the start-up check says what is wrong, and exits."""
    env = cli_env(full_slack, adk, prefix, slack_app_token="xapp-wrong", port=str(free_port()))
    code, out, err = await run_cli("serve", env=env, timeout=60)
    assert code == 1, out + err  # a start-up check against the peers, like auth.test
    assert "SLACK_APP_TOKEN: Slack refused apps.connections.open (invalid_auth)" in out + err
    assert "xapp-wrong" not in out + err and "Traceback" not in out + err


async def test_a_redis_url_without_a_scheme_is_a_config_error(full_slack: FakeSlack,
                                                              adk: AdkServer, prefix: str
                                                              ) -> None:
    env = {**cli_env(full_slack, adk, prefix), "REDIS_URL": "localhost:6379"}
    code, out, err = await run_cli("serve", env=env, timeout=60)
    assert code == 2, out + err
    assert "REDIS_URL" in out + err and "redis://" in out + err
    assert "Traceback" not in out + err


# ---- sessions -------------------------------------------------------------------------

ROOT_OLD = "1700000000.000100"
ROOT_NEW = "1700000500.000100"


async def make_threads(redis_client: aioredis.Redis, prefix: str, adk: AdkServer
                       ) -> tuple[Store, dict[str, str]]:
    """Threads as the bot writes them: one recent with a real ADK session and a turn, one
    idle for 5h (its session not in ADK), one idle but busy, one index-only entry."""
    store = default_store(redis_client, prefix)
    now = time.time()
    keys = {"new": f"T0001:C1:{ROOT_NEW}", "old": f"T0001:C1:{ROOT_OLD}",
            "busy": "T0001:C2:1700000100.000100", "ghost": "T0001:C3:1700000200.000100"}
    session_new = "T0001-C1-1700000500_000100"
    await store.save_session(keys["new"], adk_user_id="slack-T0001", session_id=session_new,
                             generation=0, created_by="U1")
    await store.save_outbox(keys["new"], ROOT_NEW, [])  # a turn, counted as the bot counts it
    for name, sid, hours in (("old", "T0001-C1-1700000000_000100", 5),
                             ("busy", "T0001-C2-1700000100_000100", 6)):
        await store.save_session(keys[name], adk_user_id="slack-T0001", session_id=sid,
                                 generation=0, created_by="U2")
        idle_since = now - hours * 3600
        await redis_client.hset(store.keys.thread(keys[name]),
                                mapping={"last_activity": f"{idle_since:.6f}", "turns": "3"})
        await redis_client.zadd(_index(store, keys[name]), {keys[name]: idle_since})
    await redis_client.rpush(store.keys.queue(keys["busy"]), "{}")
    await redis_client.zadd(_index(store, keys["ghost"]), {keys["ghost"]: now - 9 * 86400})
    async with httpx.AsyncClient(base_url=adk.base_url, trust_env=False, timeout=30) as http:
        created = await http.post(
            "/apps/test_agent/users/slack-T0001/sessions",
            json={"sessionId": session_new, "state": {"slack_user_id": "U1"}})
        assert created.status_code in (200, 409), created.text
        run = await http.post("/run", json={
            "appName": "test_agent", "userId": "slack-T0001", "sessionId": session_new,
            "newMessage": {"role": "user", "parts": [{"text": "Alice: hello"}]},
            "stateDelta": {"slack_user_name": "Alice"}})
        assert run.status_code == 200, run.text
    return store, keys


async def test_sessions_list_show_reset(full_slack: FakeSlack, adk: AdkServer, prefix: str,
                                        real_redis: aioredis.Redis) -> None:
    store, keys = await make_threads(real_redis, prefix, adk)
    env = cli_env(full_slack, adk, prefix)

    # "just now" is the last 5 s: the thread is active as the command starts, not as of
    # before the ADK calls of make_threads (seconds, on a busy machine).
    now = time.time()
    await real_redis.hset(store.keys.thread(keys["new"]), "last_activity", f"{now:.6f}")
    await real_redis.zadd(_index(store, keys["new"]), {keys["new"]: now})
    code, out, err = await run_cli("sessions", "list", env=env)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "4 threads, newest first"
    header = lines[2]
    assert header.split() == ["THREAD", "SESSION", "TURNS", "LAST", "ACTIVITY", "CREATED", "BY"]
    rows = lines[3:]
    assert [row.split()[0] for row in rows] == [keys["new"], keys["old"], keys["busy"],
                                                keys["ghost"]]
    assert "T0001-C1-1700000500_000100" in rows[0] and "U1" in rows[0]
    assert "(just now)" in rows[0] and "(5h ago)" in rows[1]
    assert "(6h ago)" in rows[2] and "(9d ago)" in rows[3]
    assert "(mapping expired)" in rows[3]
    assert rows[0].index("T0001-C1") == header.index("SESSION")  # aligned

    code, out, _ = await run_cli("sessions", "list", "--limit", "2", env=env)
    assert code == 0
    assert out.startswith("The 2 most recently active of 4 threads")

    code, out, err = await run_cli("sessions", "show", keys["new"], env=env)
    assert code == 0, out + err
    assert f"Thread {keys['new']}" in out
    assert "session id     T0001-C1-1700000500_000100" in out
    assert "turns          1" in out
    assert "ADK session T0001-C1-1700000500_000100" in out
    events_line = next(line for line in out.splitlines() if line.strip().startswith("events"))
    assert int(events_line.split()[-1]) >= 2  # the user message and the answer
    assert "slack_user_id" in out and "slack_user_name" in out

    # A Slack link to a reply in the thread; the team comes from auth.test.
    link = f"https://acme.slack.com/archives/C1/p1700000000000300?thread_ts={ROOT_OLD}&cid=C1"
    code, out, err = await run_cli("sessions", "show", link, env=env)
    assert code == 0, out + err
    assert f"Thread {keys['old']}" in out
    assert "not found in ADK" in out

    # Without Slack settings the index resolves the link.
    no_slack = {k: v for k, v in env.items() if not k.startswith("SLACK_")}
    code, out, err = await run_cli("sessions", "show", link, env=no_slack)
    assert code == 0, out + err
    assert f"Thread {keys['old']}" in out

    code, out, err = await run_cli("sessions", "reset", keys["new"], env=env)
    assert code == 0, out + err
    assert "next message starts a new ADK session: T0001-C1-1700000500_000100-g1" in out
    record = await store.get_thread(keys["new"])
    assert record is not None
    assert record.generation == 1 and record.session_id == "" and record.reset_at

    code, out, _ = await run_cli("sessions", "show", keys["new"], env=env)
    assert code == 0
    assert "the next message in the thread starts T0001-C1-1700000500_000100-g1" in out

    code, out, err = await run_cli("sessions", "show", "T0001:C9:1700000000.000900", env=env)
    assert code == 1 and "error: no thread mapping for T0001:C9:1700000000.000900" in err
    code, out, err = await run_cli("sessions", "reset", "not-a-key", env=env)
    assert code == 2 and "neither a thread key" in err and "Traceback" not in err


async def test_sessions_purge(full_slack: FakeSlack, adk: AdkServer, prefix: str,
                              real_redis: aioredis.Redis) -> None:
    store, keys = await make_threads(real_redis, prefix, adk)
    env = cli_env(full_slack, adk, prefix)

    code, out, err = await run_cli("sessions", "purge", "--older-than", "2h", "--dry-run",
                                   env=env)
    assert code == 0, out + err
    assert out.startswith("Would purge thread mappings idle for more than 2h")
    assert keys["old"] in out and keys["ghost"] in out
    assert "1 mapping would be removed" in out
    assert "1 index entry would be dropped" in out
    assert f"1 kept: a turn is queued or running ({keys['busy']})" in out
    assert await store.threads.thread_count() == 4
    assert await store.get_thread(keys["old"]) is not None

    code, out, err = await run_cli("sessions", "purge", "--older-than", "2h", env=env)
    assert code == 0, out + err
    assert "1 mapping was removed" in out
    assert await store.get_thread(keys["old"]) is None
    assert await store.get_thread(keys["busy"]) is not None
    assert await store.get_thread(keys["new"]) is not None
    index = [key for shard in store.keys.all_shards
             for key in await real_redis.zrange(store.keys.threads_index(shard), 0, -1)]
    assert sorted(index) == sorted([keys["new"], keys["busy"]])

    code, out, _ = await run_cli("sessions", "purge", "--older-than", "30d", env=env)
    assert code == 0 and "0 mappings were removed" in out

    code, _, err = await run_cli("sessions", "purge", "--older-than", "30 days", env=env)
    assert code == 2 and "is not a duration" in err


async def test_sessions_needs_redis(full_slack: FakeSlack, adk: AdkServer, prefix: str) -> None:
    env = cli_env(full_slack, adk, prefix)
    env.pop("REDIS_URL")
    code, _, err = await run_cli("sessions", "list", env=env)
    assert code == 2 and "REDIS_URL is not set" in err
    with closed_port() as port:  # nothing listens there
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        code, _, err = await run_cli("sessions", "list", env=env)
    assert code == 1 and "error: cannot reach Redis" in err and "Traceback" not in err


def _index(store: Store, key: str) -> str:
    """The threads index of `key`'s shard."""
    return store.keys.threads_index(store.keys.shard_of(key))


# ---- the key layout and `migrate` -------------------------------------------------------


async def test_keys_of_an_old_layout_are_refused_until_migrate_moves_them(
    full_slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: aioredis.Redis
) -> None:
    # A prefix used by the unsharded layout: a thread and its index entry.
    thread = "T0001:C1:1700000000.000100"
    await real_redis.hset(f"{prefix}:{{{thread}}}:thread",
                          mapping={"engaged": "1", "session_id": "S-1", "generation": "0",
                                   "adk_user_id": "slack-T0001", "created_by": "U1"})
    await real_redis.zadd(f"{prefix}:threads", {thread: time.time()})
    env = cli_env(full_slack, adk, prefix, port=str(free_port()))
    for command in (("serve",), ("sessions", "list")):
        code, out, err = await run_cli(*command, env=env)
        assert code != 0, out + err
        assert "unsharded layout" in err and "`python -m bot migrate`" in err, err
    # While a worker's heartbeat lives, the migration waits for the bots to stop.
    await real_redis.set(f"{prefix}:hb:a-worker", "1", px=60_000)
    code, out, err = await run_cli("migrate", env=env)
    assert code == 1 and "stop the bots first" in err, out + err
    await real_redis.delete(f"{prefix}:hb:a-worker")
    code, out, err = await run_cli("migrate", env=env)
    assert code == 0, out + err
    assert out.strip() == (f"migrated prefix {prefix!r} from 'unsharded' to 'shards=8': 1 key(s) "
                           "of 1 thread(s) moved, 0 thread(s) with queued turns rung, 1 old "
                           "stream, index and heartbeat key(s) dropped")
    code, out, err = await run_cli("sessions", "list", env=env)
    assert code == 0, out + err
    assert out.splitlines()[0] == "1 thread, newest first"
    code, out, _ = await run_cli("migrate", env=env)
    assert code == 0
    assert out.strip() == "nothing to do: the keys are in the layout 'shards=8' already"

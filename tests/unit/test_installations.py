"""The installation store (sealed records in Redis), the OAuth state store, the encryption
key and the locked refresh of rotating tokens. On fakeredis here (`any_redis`);
tests/integration/test_real_redis.py runs them on the real Redis too."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.config import Settings, encryption_key_problem
from bot.slack.routing import installation_of
from bot.slack.token_refresh import RefreshingInstallationStore
from bot.store.cipher import Cipher, CipherError
from bot.store.installations import InstallKeys, RedisInstallationStore, owner_of
from bot.store.oauth_state import RedisOAuthStateStore
from bot.turns import InstallRef, Turn
from tests.waiting import eventually

# Fixed keys (test data, never a deployment's): pytest-xdist collects the same ids on
# every process.
KEY = "vM4GCfZjl0e5XPMBCAvX9UxzXUpyOUsWiEqlQ7-ipWg="
SECOND_KEY = "BB8T6vAUFeBjZeanRWXD1ACFIKdIFCA5F6YmdP_RtXM="
THIRD_KEY = "k68Y-86newerz_RRi60-RGGgpFmW19_WhpEop-UqCZs="


def installation(team: str | None = "T1", *, enterprise: str | None = None, org: bool = False,
                 user: str = "U1", token: str = "xoxb-secret-1", **extra: Any) -> Installation:
    return Installation(app_id="A1", enterprise_id=enterprise, team_id=None if org else team,
                        team_name="Team One", bot_token=token, bot_id="B1",
                        bot_user_id="UBOT1", bot_scopes="chat:write,users:read", user_id=user,
                        is_enterprise_install=org, **extra)


def store_on(client: aioredis.Redis, prefix: str, key: str = KEY) -> RedisInstallationStore:
    return RedisInstallationStore(client, InstallKeys(prefix), Cipher.from_setting(key))


async def test_an_installation_is_found_again_and_no_token_is_stored_in_clear(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation())
    bot = await store.async_find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None
    assert (bot.bot_token, bot.bot_user_id, bot.bot_id, bot.team_id) == (
        "xoxb-secret-1", "UBOT1", "B1", "T1")
    found = await store.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None and found.user_id == "U1" and found.bot_token == "xoxb-secret-1"
    by_user = await store.async_find_installation(enterprise_id=None, team_id="T1",
                                                  user_id="U1")
    assert by_user is not None and by_user.bot_token == "xoxb-secret-1"
    # What a Redis dump would show: nothing of the token, nor the team's name.
    for key in [k async for k in any_redis.scan_iter(match=f"{prefix}:*")]:
        if await any_redis.type(key) == "string":
            value = await any_redis.get(key)
            assert "xoxb" not in value and "Team One" not in value, key
    assert await store.async_find_bot(enterprise_id=None, team_id="T2") is None
    assert [owner for owner, _ in await store.owners()] == ["none:T1"]


async def test_an_org_wide_install_serves_every_workspace_of_the_org(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation(enterprise="E1", org=True, token="xoxb-org"))
    for team in ("T1", "T2"):
        bot = await store.async_find_bot(enterprise_id="E1", team_id=team,
                                         is_enterprise_install=True)
        assert bot is not None and bot.bot_token == "xoxb-org"
    # A workspace install of the same org is another installation.
    assert await store.async_find_bot(enterprise_id="E1", team_id="T1") is None
    assert owner_of("E1", "T1", True) == "E1:none"


async def test_a_later_install_by_someone_else_gives_every_installer_the_new_bot_token(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation(user="U1", token="xoxb-first"))
    await store.async_save(installation(user="U2", token="xoxb-second"))
    first = await store.async_find_installation(enterprise_id=None, team_id="T1",
                                                user_id="U1")
    assert first is not None and first.user_id == "U1" and first.bot_token == "xoxb-second"


async def test_an_uninstall_deletes_everything_and_lists_the_workspace_as_gone(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation(user="U1"))
    await store.async_save(installation(user="U2"))
    await store.async_save(installation(team="T2"))
    await store.async_delete_all(enterprise_id=None, team_id="T1")
    assert await store.async_find_bot(enterprise_id=None, team_id="T1") is None
    for user in (None, "U1", "U2"):
        assert await store.async_find_installation(enterprise_id=None, team_id="T1",
                                                   user_id=user) is None
    assert [o for o, _ in await store.owners()] == ["none:T2"]
    assert [o for o, _ in await store.uninstalled()] == ["none:T1"]
    assert [k async for k in any_redis.scan_iter(match=f"{prefix}:*T1*")] == []
    # Installed again: served again, no longer gone.
    await store.async_save(installation(user="U1"))
    assert [o for o, _ in await store.uninstalled()] == []


async def test_records_sealed_with_another_key_are_refused_not_misread(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    await store_on(any_redis, prefix).async_save(installation())
    other = store_on(any_redis, prefix, SECOND_KEY)
    with pytest.raises(CipherError, match="INSTALLATION_ENCRYPTION_KEY"):
        await other.async_find_bot(enterprise_id=None, team_id="T1")
    # The old key second: still read, and sealed again under the new one.
    new = THIRD_KEY
    both = store_on(any_redis, prefix, f"{new},{KEY}")
    bot = await both.async_find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None and bot.bot_token == "xoxb-secret-1"
    sealed = await any_redis.get(InstallKeys(prefix).bot("none:T1"))
    only_new = Cipher.from_setting(new)
    with pytest.raises(CipherError):
        only_new.open(sealed)
    assert "xoxb-secret-1" in only_new.open(both.cipher.reseal(sealed))


@pytest.mark.parametrize(("value", "problem"), [
    (KEY, None),
    (f"{KEY}, {SECOND_KEY}", None),
    ("", "it is empty"),
    ("not-a-key", "is not a Fernet key"),
    (f"{KEY},short", "key 2 is not a Fernet key"),
])
def test_the_encryption_key_is_checked(value: str, problem: str | None) -> None:
    found = encryption_key_problem(value)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_many_workspaces_need_a_secret_a_key_and_a_real_redis() -> None:
    settings = Settings(_env_file=None, slack_client_id="1.2",  # type: ignore[call-arg]
                        slack_signing_secret="s")
    assert settings.distributed
    problems = " ".join(settings.problems_for_serve())
    for name in ("SLACK_CLIENT_SECRET", "INSTALLATION_ENCRYPTION_KEY", "REDIS_URL"):
        assert name in problems
    assert "SLACK_BOT_TOKEN" not in problems
    ready = Settings(_env_file=None, slack_client_id="1.2",  # type: ignore[call-arg]
                     slack_client_secret="c", slack_signing_secret="s",
                     installation_encryption_key=KEY, redis_url="redis://127.0.0.1:6379/0")
    assert ready.problems_for_serve() == []
    # A bot token wins: one workspace, as without a client id.
    single = Settings(_env_file=None, slack_client_id="1.2",  # type: ignore[call-arg]
                      slack_bot_token="xoxb-1", slack_signing_secret="s")
    assert not single.distributed and single.problems_for_serve() == []


async def test_an_oauth_state_is_good_for_one_redirect(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    states = RedisOAuthStateStore(any_redis, prefix, ttl_seconds=600)
    state = await states.async_issue()
    assert len(state) == 32
    assert 0 < await any_redis.ttl(states.key(state)) <= 600
    assert await states.async_consume(state) is True
    assert await states.async_consume(state) is False  # replayed
    assert await states.async_consume("0" * 32) is False  # never issued
    assert await states.async_consume(f"{prefix}:*") is False  # not a state at all
    old = await states.async_issue()
    await any_redis.pexpire(states.key(old), 1)
    await eventually(lambda: _gone(any_redis, states.key(old)), what="the state's expiry")
    assert await states.async_consume(old) is False  # expired


async def _gone(client: aioredis.Redis, key: str) -> bool:
    return await client.exists(key) == 0


class CountingRotator:
    """Stands in for slack_sdk's AsyncTokenRotator (whose Slack call is tested against the
    fake Slack): counts refreshes, each held until `release` is set (the Slack call under
    way while the other replicas look)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def perform_bot_token_rotation(self, *, bot: Bot, minutes_before_expiration: int
                                         ) -> Bot | None:
        self.calls += 1
        await self.release.wait()
        fresh = Bot(**bot.to_dict_for_copying())
        fresh.bot_token = f"xoxe.xoxb-fresh-{self.calls}"
        fresh.bot_refresh_token = f"xoxe-1-fresh-{self.calls}"
        fresh.bot_token_expires_at = int(time.time()) + 43200
        return fresh


class CountingStore(RedisInstallationStore):
    """The store, counting its bot reads."""

    reads = 0

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        self.reads += 1
        return await super().async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                            is_enterprise_install=is_enterprise_install)


async def test_an_expiring_token_is_refreshed_once_across_replicas(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation(
        token="xoxe.xoxb-old", bot_refresh_token="xoxe-1-old",
        bot_token_expires_at=int(time.time()) - 5))  # already expired
    rotator = CountingRotator()
    rotator.release.clear()
    stores = [CountingStore(any_redis, InstallKeys(prefix), Cipher.from_setting(KEY))
              for _ in range(4)]
    replicas = [RefreshingInstallationStore(s, rotator, minutes=120)  # type: ignore[arg-type]
                for s in stores]
    finding = asyncio.gather(*(r.async_find_bot(enterprise_id=None, team_id="T1")
                               for r in replicas))
    # One replica refreshes; each of the other three read the bot, lost the lock, and read
    # it again while the refresh is under way (the holder read it twice too).
    await eventually(lambda: rotator.calls == 1 and sum(s.reads for s in stores) >= 8,
                     what="the replicas waiting on the refresh")
    rotator.release.set()
    bots = await finding
    assert rotator.calls == 1
    assert {b.bot_token for b in bots if b is not None} == {"xoxe.xoxb-fresh-1"}
    stored = await store.async_find_bot(enterprise_id=None, team_id="T1")
    assert stored is not None and stored.bot_refresh_token == "xoxe-1-fresh-1"
    # Fresh now: read without another refresh, installer records included.
    again = await replicas[0].async_find_installation(enterprise_id=None, team_id="T1")
    assert again is not None and again.bot_token == "xoxe.xoxb-fresh-1"
    assert rotator.calls == 1
    assert await any_redis.exists(InstallKeys(prefix).refresh_lock("none:T1")) == 0


async def test_a_token_not_yet_expired_is_used_while_another_replica_refreshes_it(
    any_redis: aioredis.Redis, prefix: str,
) -> None:
    store = store_on(any_redis, prefix)
    await store.async_save(installation(
        token="xoxe.xoxb-old", bot_refresh_token="xoxe-1-old",
        bot_token_expires_at=int(time.time()) + 600))  # due (within 120 min), still valid
    await any_redis.set(InstallKeys(prefix).refresh_lock("none:T1"), "another", px=5000)
    rotator = CountingRotator()
    replica = RefreshingInstallationStore(store, rotator, minutes=120)  # type: ignore[arg-type]
    bot = await replica.async_find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None and bot.bot_token == "xoxe.xoxb-old" and rotator.calls == 0


def test_the_installation_is_read_from_the_events_authorizations() -> None:
    def body(**auth: Any) -> dict[str, Any]:
        return {"team_id": "T9", "authorizations": [auth]}

    assert installation_of(body(team_id="T1", user_id="UB", is_bot=True)) == InstallRef(
        team_id="T1", bot_user="UB")
    assert installation_of(body(enterprise_id="E1", team_id=None, user_id="UB",
                                is_enterprise_install=True)) == InstallRef(
        team_id="T9", enterprise_id="E1", org_install=True, bot_user="UB")
    for bad in ({}, {"authorizations": []}, {"authorizations": ["x"]},
                body(team_id="T1"), body(user_id="UB"), body(team_id=7, user_id="UB"),
                body(is_enterprise_install=True, user_id="UB"),
                body(team_id="T1", user_id="\ud800")):
        assert installation_of(bad) is None, bad


def test_a_turn_keeps_its_installation_through_the_queue() -> None:
    ref = InstallRef(team_id="T1", enterprise_id="E1", bot_user="UB")
    turn = Turn(team="T1", channel="C1", thread_ts="1.0", ts="1.0", user="U1", text="hi",
                kind="mention", install=ref)
    again = Turn.from_json(turn.to_json())
    assert again == turn and again.bot_user == "UB"
    plain = Turn.from_json(Turn(team="T1", channel="C1", thread_ts="1.0", ts="1.0",
                                user="U1", text="hi", kind="mention").to_json())
    assert plain.install is None and plain.bot_user is None

"""The access policy: settings parsing, `decide`, and the user group resolver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import (
    AccessPolicy,
    Allow,
    Decision,
    Deny,
    Skip,
    decide,
    decide_control,
    followup_policy,
    needs_user_groups,
)
from bot.config import DEFAULT_DENIED_MESSAGE, Settings, describe_validation_error
from bot.slack.usergroups import UserGroupResolver
from tests.fakes.fake_slack import FakeSlack
from tests.settings import access_policy

TOKEN = "xoxb-test-token"
LIST = "usergroups.users.list"


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def policy(**values: Any) -> AccessPolicy:
    sets = {k: frozenset(v) for k, v in values.items() if isinstance(v, set)}
    return access_policy(**(values | sets))


# ---- decide ------------------------------------------------------------------------------

MENTION: dict[str, Any] = {"channel": "C1", "user": "U1", "groups": set(), "kind": "mention",
                           "mentioned": True, "starter": "U1"}
FOLLOWUP = MENTION | {"kind": "followup", "mentioned": False}
MENTIONED_FOLLOWUP = FOLLOWUP | {"mentioned": True}
DM = MENTION | {"channel": "D1", "kind": "dm", "mentioned": False, "starter": None}

A, D, S = Allow, Deny, Skip

# (id, policy settings, turn (overrides), expected decision type)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], type]] = [
    # no policy: everything is answered
    ("open mention", {}, MENTION, A),
    ("open follow-up", {}, FOLLOWUP, A),
    ("open dm", {}, DM, A),
    # denied channels
    ("denied channel, mention", {"denied_channels": {"C1"}}, MENTION, D),
    ("denied channel, follow-up", {"denied_channels": {"C1"}}, FOLLOWUP, S),
    ("denied channel, mentioned follow-up", {"denied_channels": {"C1"}}, MENTIONED_FOLLOWUP, D),
    ("other channel denied", {"denied_channels": {"C2"}}, MENTION, A),
    # allowed channels
    ("allowed channel", {"allowed_channels": {"C1"}}, MENTION, A),
    ("unlisted channel, mention", {"allowed_channels": {"C2"}}, MENTION, D),
    ("unlisted channel, follow-up", {"allowed_channels": {"C2"}}, FOLLOWUP, S),
    ("deny beats allow, channel", {"allowed_channels": {"C1"}, "denied_channels": {"C1"}},
     MENTION, D),
    # DMs: channel lists apply only when they name DM channels
    ("dm not restricted by channel allow-list", {"allowed_channels": {"C1"}}, DM, A),
    ("dm restricted once a D id is allowed", {"allowed_channels": {"C1", "D9"}}, DM, D),
    ("listed dm allowed", {"allowed_channels": {"C1", "D1"}}, DM, A),
    ("dm denied explicitly", {"denied_channels": {"D1"}}, DM, D),
    ("other dm denied", {"denied_channels": {"D9"}}, DM, A),
    ("mpim is a channel", {"allowed_channels": {"C1"}}, MENTION | {"channel": "G1"}, D),
    # denied users
    ("denied user, mention", {"denied_users": {"U1"}}, MENTION, D),
    ("denied user, dm", {"denied_users": {"U1"}}, DM, D),
    ("denied user, follow-up", {"denied_users": {"U1"}}, FOLLOWUP, S),
    ("other user denied", {"denied_users": {"U2"}}, MENTION, A),
    # allowed users (apply to DMs too)
    ("allowed user", {"allowed_users": {"U1"}}, MENTION, A),
    ("unlisted user, mention", {"allowed_users": {"U2"}}, MENTION, D),
    ("unlisted user, dm", {"allowed_users": {"U2"}}, DM, D),
    ("unlisted user, follow-up", {"allowed_users": {"U2"}}, FOLLOWUP, S),
    ("deny beats allow, user", {"allowed_users": {"U1"}, "denied_users": {"U1"}}, MENTION, D),
    # allowed groups, alone and together with allowed users (either one lets a user in)
    ("in allowed group", {"allowed_usergroups": {"S1"}}, MENTION | {"groups": {"S1"}}, A),
    ("in another group", {"allowed_usergroups": {"S1"}}, MENTION | {"groups": {"S9"}}, D),
    ("in no group", {"allowed_usergroups": {"S1"}}, MENTION, D),
    ("not in allowed group, follow-up", {"allowed_usergroups": {"S1"}}, FOLLOWUP, S),
    ("not in allowed group, dm", {"allowed_usergroups": {"S1"}}, DM, D),
    ("listed user outside the group", {"allowed_users": {"U1"}, "allowed_usergroups": {"S1"}},
     MENTION, A),
    ("group member not listed", {"allowed_users": {"U2"}, "allowed_usergroups": {"S1"}},
     MENTION | {"groups": {"S1"}}, A),
    ("neither listed nor member", {"allowed_users": {"U2"}, "allowed_usergroups": {"S1"}},
     MENTION, D),
    # denied groups beat everything
    ("in denied group", {"denied_usergroups": {"S2"}}, MENTION | {"groups": {"S2"}}, D),
    ("in denied group, follow-up", {"denied_usergroups": {"S2"}},
     FOLLOWUP | {"groups": {"S2"}}, S),
    ("in denied group, dm", {"denied_usergroups": {"S2"}}, DM | {"groups": {"S2"}}, D),
    ("not in denied group", {"denied_usergroups": {"S2"}}, MENTION, A),
    ("denied group beats allowed user", {"allowed_users": {"U1"}, "denied_usergroups": {"S2"}},
     MENTION | {"groups": {"S2"}}, D),
    ("denied group beats allowed group",
     {"allowed_usergroups": {"S1"}, "denied_usergroups": {"S2"}},
     MENTION | {"groups": {"S1", "S2"}}, D),
    ("denied user beats allowed group", {"allowed_usergroups": {"S1"}, "denied_users": {"U1"}},
     MENTION | {"groups": {"S1"}}, D),
    ("allowed channel, denied user", {"allowed_channels": {"C1"}, "denied_users": {"U1"}},
     MENTION, D),
    # follow-up policy "starter"
    ("starter: starter's follow-up", {"followup_default": "starter"}, FOLLOWUP, A),
    ("starter: someone else's follow-up", {"followup_default": "starter"},
     FOLLOWUP | {"user": "U2"}, S),
    ("starter: unknown starter", {"followup_default": "starter"},
     FOLLOWUP | {"starter": None}, S),
    ("starter: empty starter", {"followup_default": "starter"}, FOLLOWUP | {"starter": ""}, S),
    ("starter: someone else mentions", {"followup_default": "starter"},
     MENTION | {"user": "U2"}, A),
    ("starter: someone else's mentioned follow-up", {"followup_default": "starter"},
     MENTIONED_FOLLOWUP | {"user": "U2"}, A),
    ("starter: dm", {"followup_default": "starter"}, DM | {"user": "U2"}, A),
    # follow-up policy "mention"
    ("mention: un-mentioned follow-up", {"followup_default": "mention"}, FOLLOWUP, S),
    ("mention: mentioned follow-up", {"followup_default": "mention"}, MENTIONED_FOLLOWUP, A),
    ("mention: mention", {"followup_default": "mention"}, MENTION, A),
    ("mention: dm needs none", {"followup_default": "mention"}, DM, A),
    # follow-up policy "always"
    ("always: someone else's follow-up", {"followup_default": "always"},
     FOLLOWUP | {"user": "U2", "starter": None}, A),
    # per-channel follow-up policies override the default
    ("channel policy mention", {"followup_channels": {"C1": "mention"}}, FOLLOWUP, S),
    ("channel policy elsewhere", {"followup_channels": {"C2": "mention"}}, FOLLOWUP, A),
    ("channel policy always over starter default",
     {"followup_default": "starter", "followup_channels": {"C1": "always"}},
     FOLLOWUP | {"user": "U2"}, A),
    ("channel policy starter", {"followup_channels": {"C1": "starter"}},
     FOLLOWUP | {"user": "U2"}, S),
    # access refusals come first, whatever the follow-up policy
    ("starter's follow-up in a denied channel",
     {"followup_default": "starter", "denied_channels": {"C1"}}, FOLLOWUP, S),
]


def run(p: AccessPolicy, turn: dict[str, Any]) -> Decision:
    return decide(
        p,
        channel=turn["channel"],
        user=turn["user"],
        user_groups=frozenset(turn["groups"]),
        kind=turn["kind"],
        mentioned=turn["mentioned"],
        thread_starter=turn["starter"],
    )


@pytest.mark.parametrize(("settings", "turn", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(settings: dict[str, Any], turn: dict[str, Any], expected: type) -> None:
    decision = run(policy(**settings), turn)
    assert type(decision) is expected, decision
    if not isinstance(decision, Allow):
        assert decision.reason


def test_reasons_name_the_rule() -> None:
    assert run(policy(denied_channels={"C1"}), MENTION) == Deny(
        "channel C1 is in ACCESS_DENIED_CHANNELS")
    assert "ACCESS_ALLOWED_CHANNELS" in run(policy(allowed_channels={"C2"}), MENTION).reason  # type: ignore[union-attr]
    assert run(policy(denied_usergroups={"S2"}), MENTION | {"groups": {"S2"}}) == Deny(
        "user U1 is in denied user group S2")
    skip = run(policy(followup_default="starter"), FOLLOWUP | {"user": "U2"})
    assert isinstance(skip, Skip) and "starter" in skip.reason and "U1" in skip.reason


def test_needs_user_groups_and_followup_policy() -> None:
    assert not needs_user_groups(policy())
    assert not needs_user_groups(policy(allowed_users={"U1"}, denied_channels={"C1"}))
    assert needs_user_groups(policy(allowed_usergroups={"S1"}))
    assert needs_user_groups(policy(denied_usergroups={"S2"}))
    p = policy(followup_default="starter", followup_channels={"C2": "mention"})
    assert followup_policy(p, "C1") == "starter"
    assert followup_policy(p, "C2") == "mention"
    assert p.usergroups == frozenset() and policy(
        allowed_usergroups={"S1"}, denied_usergroups={"S2"}).usergroups == {"S1", "S2"}


# ---- settings ----------------------------------------------------------------------------


def test_access_defaults_allow_everything() -> None:
    s = make()
    p = AccessPolicy.from_settings(s)
    assert p == AccessPolicy(followup_default="always", denied_message=DEFAULT_DENIED_MESSAGE,
                             usergroup_cache_seconds=300)
    assert s.access_denied_message == DEFAULT_DENIED_MESSAGE == p.denied_message
    assert s.usergroup_cache_seconds == 300 and s.followup_policy_default == "always"
    assert isinstance(run(p, FOLLOWUP | {"user": "U9"}), Allow)


def test_lists_and_maps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ACCESS_ALLOWED_CHANNELS": "C1, g2 ,,C1",
        "ACCESS_DENIED_CHANNELS": '["D1", "C3"]',
        "ACCESS_ALLOWED_USERS": "U1,W2",
        "ACCESS_DENIED_USERS": "",
        "ACCESS_ALLOWED_USERGROUPS": ' [ "S1" ] ',
        "ACCESS_DENIED_USERGROUPS": "S2",
        "FOLLOWUP_POLICY_DEFAULT": " Starter ",
        "FOLLOWUP_POLICY_CHANNELS": "C1=mention, C2 = ALWAYS,",
        "ACCESS_DENIED_MESSAGE": "Not here, sorry.",
        "USERGROUP_CACHE_SECONDS": "60",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = make()
    assert s.access_allowed_channels == ["C1", "G2"]
    assert s.access_denied_channels == ["D1", "C3"]
    assert s.access_allowed_users == ["U1", "W2"] and s.access_denied_users == []
    assert s.access_allowed_usergroups == ["S1"] and s.access_denied_usergroups == ["S2"]
    assert s.followup_policy_default == "starter"
    assert s.followup_policy_channels == {"C1": "mention", "C2": "always"}
    p = AccessPolicy.from_settings(s)
    assert p.allowed_channels == {"C1", "G2"} and p.denied_usergroups == {"S2"}
    assert p.followup_channels == {"C1": "mention", "C2": "always"}
    assert p.denied_message == "Not here, sorry." and p.usergroup_cache_seconds == 60


def test_follow_up_map_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLLOWUP_POLICY_CHANNELS", '{"C1": "starter", "G2": "mention"}')
    assert make().followup_policy_channels == {"C1": "starter", "G2": "mention"}
    assert make(followup_policy_channels={"C3": "always"}).followup_policy_channels == {
        "C3": "always"}
    assert make(access_allowed_users=["U1", "U2"]).access_allowed_users == ["U1", "U2"]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("followup_policy_default", "sometimes", "unknown follow-up policy 'sometimes'"),
        ("followup_policy_channels", "C1=strter", "unknown follow-up policy 'strter' for C1"),
        ("followup_policy_channels", '{"C1": "never"}', "unknown follow-up policy 'never'"),
        ("followup_policy_channels", "C1", "'C1' is not CHANNEL=POLICY"),
        ("followup_policy_channels", "=starter", "channel id is missing"),
        ("followup_policy_channels", "#general=starter", "not a Slack channel id"),
        ("followup_policy_channels", '{"C1": "starter"', "not a valid JSON object"),
        ("access_allowed_channels", "#general", "'#general' is not a Slack channel id"),
        ("access_denied_channels", "U123", "not a Slack channel id"),
        ("access_allowed_users", "@alice", "'@alice' is not a Slack user id"),
        ("access_denied_users", "C1", "not a Slack user id"),
        ("access_allowed_usergroups", "U1", "not a Slack user group id"),
        ("access_denied_usergroups", '["S1", 2]', "2 is not a user group id"),
        ("access_allowed_channels", '["C1"', "not a valid JSON list"),
        ("access_allowed_channels", '{"C1": 1}', "is not a Slack channel id"),
        ("usergroup_cache_seconds", "-1", "greater than or equal to 0"),
    ],
)
def test_invalid_access_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name.upper(), value)
    with pytest.raises(ValidationError) as info:
        make()
    lines = describe_validation_error(info.value)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{name.upper()}: "), lines
    assert needle in lines[0], lines


# ---- the user group resolver ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_usergroup("S1", ["U1", "U2"])
        fake.add_usergroup("S2", ["U3"])
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.base_url)


async def test_resolver_caches_each_group(slack: FakeSlack, client: AsyncWebClient) -> None:
    resolver = UserGroupResolver(client, ["S1"], ttl=300)
    assert await resolver.groups_of("U1") == {"S1"}
    assert await resolver.groups_of("U3") == frozenset()
    assert len(slack.calls_to(LIST)) == 1
    assert slack.calls_to(LIST)[0].params["usergroup"] == "S1"


async def test_resolver_asks_only_for_the_policy_groups(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    p = policy(allowed_usergroups={"S1"}, denied_usergroups={"S2"}, usergroup_cache_seconds=60)
    resolver = UserGroupResolver.for_policy(client, p)
    assert resolver.groups == ("S1", "S2")
    assert await resolver.groups_of("U3") == {"S2"}
    assert await resolver.groups_of("U2") == {"S1"}
    assert sorted(c.params["usergroup"] for c in slack.calls_to(LIST)) == ["S1", "S2"]
    assert await UserGroupResolver(client, [], ttl=300).groups_of("U1") == frozenset()
    assert len(slack.calls_to(LIST)) == 2


async def test_concurrent_lookups_share_one_call(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.set_delay(LIST, 0.1)
    resolver = UserGroupResolver(client, ["S1"], ttl=300)
    results = await asyncio.gather(*(resolver.groups_of(u) for u in ("U1", "U2", "U3") * 5))
    assert results[:3] == [{"S1"}, {"S1"}, frozenset()]
    assert len(slack.calls_to(LIST)) == 1


async def test_cached_members_expire(slack: FakeSlack, client: AsyncWebClient) -> None:
    clock = Clock()
    resolver = UserGroupResolver(client, ["S1"], ttl=300, clock=clock)
    assert await resolver.groups_of("U3") == frozenset()
    slack.add_usergroup("S1", ["U3"])
    clock.now += 299
    assert await resolver.groups_of("U3") == frozenset()  # still cached
    assert len(slack.calls_to(LIST)) == 1
    clock.now += 2
    assert await resolver.groups_of("U3") == {"S1"}
    assert await resolver.groups_of("U1") == frozenset()
    assert len(slack.calls_to(LIST)) == 2


async def test_slack_error_means_not_a_member_for_a_while(
    slack: FakeSlack, client: AsyncWebClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    resolver = UserGroupResolver(client, ["S1"], ttl=300, error_ttl=30, clock=clock)
    slack.fail_next(LIST, status=200, error="missing_scope")
    with caplog.at_level(logging.WARNING, logger="bot.slack"):
        assert await resolver.groups_of("U1") == frozenset()
    assert "S1" in caplog.text and "missing_scope" in caplog.text
    assert TOKEN not in caplog.text
    clock.now += 29
    assert await resolver.groups_of("U1") == frozenset()
    assert len(slack.calls_to(LIST)) == 1  # the failure is remembered, Slack is not hammered
    clock.now += 2
    assert await resolver.groups_of("U1") == {"S1"}
    assert len(slack.calls_to(LIST)) == 2


async def test_unknown_group_and_http_errors_count_as_empty(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    resolver = UserGroupResolver(client, ["S1", "S404"], ttl=300)
    slack.fail_next(LIST, status=500)
    assert await resolver.groups_of("U1") == frozenset()  # S1: 500, S404: no_such_subteam
    errors = {c.error for c in slack.calls_to(LIST)} | {c.status for c in slack.calls_to(LIST)}
    assert "no_such_subteam" in errors and 500 in errors


def test_non_list_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="comma-separated list of channel ids"):
        make(access_allowed_channels={"C1": 1})
    with pytest.raises(ValidationError, match="CHANNEL=POLICY pairs"):
        make(followup_policy_channels=["C1=starter"])


async def test_known_members_survive_a_later_error(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    clock = Clock()
    resolver = UserGroupResolver(client, ["S1"], ttl=10, error_ttl=30, clock=clock)
    assert await resolver.groups_of("U1") == {"S1"}
    clock.now += 11
    slack.fail_next(LIST, status=200, error="ratelimited")
    assert await resolver.groups_of("U1") == {"S1"}
    assert await resolver.groups_of("U3") == frozenset()
    assert len(slack.calls_to(LIST)) == 2


async def test_denied_groups_fail_closed(slack: FakeSlack, client: AsyncWebClient) -> None:
    p = policy(allowed_usergroups={"S1"}, denied_usergroups={"S2"})
    resolver = UserGroupResolver.for_policy(client, p)
    slack.fail_next(LIST, times=2, status=200, error="missing_scope")
    groups = await resolver.groups_of("U1")
    assert groups == {"S2"}  # S1 unknown: not a member; S2 unknown: assumed a member
    decision = decide(p, channel="C1", user="U1", user_groups=groups, kind="mention",
                      mentioned=True, thread_starter=None)
    assert isinstance(decision, Deny)


CONTROL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], type]] = [
    ("open", {}, {}, A),
    ("denied user", {"denied_users": {"U1"}}, {}, D),
    ("not on the user allow-list", {"allowed_users": {"U2"}}, {}, D),
    ("on the user allow-list", {"allowed_users": {"U1"}}, {}, A),
    ("in an allowed group", {"allowed_usergroups": {"S1"}}, {"groups": {"S1"}}, A),
    ("in no allowed group", {"allowed_usergroups": {"S1"}}, {}, D),
    ("listed user, group policy", {"allowed_users": {"U1"}, "allowed_usergroups": {"S1"}}, {},
     A),
    ("in a denied group", {"denied_usergroups": {"S2"}}, {"groups": {"S2"}}, D),
    ("denied group beats allowed group",
     {"allowed_usergroups": {"S1"}, "denied_usergroups": {"S2"}}, {"groups": {"S1", "S2"}}, D),
    ("denied channel", {"denied_channels": {"C1"}}, {}, D),
    ("channel not allowed", {"allowed_channels": {"C2"}}, {}, D),
    ("dm, channel allow-list without dms", {"allowed_channels": {"C2"}}, {"channel": "D1"}, A),
    ("un-addressed refusal is silent", {"denied_users": {"U1"}}, {"addressed": False}, S),
    ("un-addressed, allowed", {}, {"addressed": False}, A),
    # Follow-up policies are about answers; a control asks for none.
    ("starter-only channel", {"followup_default": "starter"}, {"addressed": False}, A),
    ("mention-only channel", {"followup_default": "mention"}, {"addressed": False}, A),
]


@pytest.mark.parametrize(("settings", "use", "expected"),
                         [c[1:] for c in CONTROL_CASES], ids=[c[0] for c in CONTROL_CASES])
def test_who_may_use_a_control(settings: dict[str, Any], use: dict[str, Any],
                               expected: type) -> None:
    decision = decide_control(
        policy(**settings), channel=use.get("channel", "C1"), user="U1",
        user_groups=frozenset(use.get("groups", set())), addressed=use.get("addressed", True))
    assert type(decision) is expected


def test_a_control_refused_as_a_question_is_refused() -> None:
    """The user and channel rules are those of `decide` for a mention."""
    for _, settings, use, _ in CASES:
        if use["kind"] != "mention":
            continue
        p = policy(**settings)
        groups = frozenset(use["groups"])
        question = decide(p, channel=use["channel"], user=use["user"], user_groups=groups,
                          kind="mention", mentioned=True, thread_starter=use["starter"])
        control = decide_control(p, channel=use["channel"], user=use["user"],
                                 user_groups=groups)
        assert type(control) is type(question)

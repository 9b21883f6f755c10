"""Which ADK user id owns a new thread's session (bot/turns.py adk_user_id_for): a private
channel, a DM or a group DM never shares one with another conversation, whatever
ADK_USER_SCOPE says; and the channel type each kind of event carries reaches the turn."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import Settings
from bot.slack.routing import BotIdentity, Route, route_event
from bot.turns import adk_user_id_for, is_public_channel, thread_key
from tests.settings import default_settings

MAX_INPUT_CHARS = default_settings().max_input_chars

BOT = BotIdentity(user_id="UBOT", team_id="T1")
TS = "1700000000.000100"


def user_id(scope: str, channel: str, channel_type: str) -> str:
    return adk_user_id_for(scope, "T1", channel, thread_key("T1", channel, TS),
                           channel_type=channel_type)


@pytest.mark.parametrize(("channel", "channel_type", "workspace"), [
    ("C1", "channel", "slack-T1"),  # a public channel
    ("C2", "group", "slack-T1-C2"),  # a private channel with a C id
    ("G1", "group", "slack-T1-G1"),  # a private channel with a G id
    ("D1", "im", "slack-T1-D1"),  # a DM
    ("D2", "app_home", "slack-T1-D2"),  # the app's Messages tab
    ("C3", "mpim", "slack-T1-C3"),  # a group DM
    ("G2", "mpim", "slack-T1-G2"),
    ("C4", "", "slack-T1-C4"),  # an app_mention: no channel type, so not known public
    ("G3", "channel", "slack-T1-G3"),  # a G or D id is never a public channel
])
def test_private_conversations_never_share_an_id(channel: str, channel_type: str,
                                                 workspace: str) -> None:
    assert user_id("workspace", channel, channel_type) == workspace
    assert user_id("channel", channel, channel_type) == f"slack-T1-{channel}"
    assert user_id("thread", channel, channel_type) == f"slack-T1-{channel}-{TS.replace('.', '_')}"


def test_only_a_channel_the_event_calls_public_is_public() -> None:
    assert is_public_channel("C1", "channel")
    for channel, channel_type in (("C1", ""), ("C1", "group"), ("C1", "mpim"),
                                  ("D1", "im"), ("G1", "channel"), ("D1", "channel")):
        assert not is_public_channel(channel, channel_type)


def test_the_default_scope_gives_every_channel_and_dm_its_own_id() -> None:
    scope = Settings(_env_file=None).adk_user_scope  # type: ignore[call-arg]
    assert scope == "channel"
    ids = {user_id(scope, c, t) for c, t in (("C1", "channel"), ("C2", "channel"),
                                             ("G1", "group"), ("D1", "im"), ("C3", "mpim"))}
    assert len(ids) == 5


def body(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": event}


@pytest.mark.parametrize(("event", "channel_type"), [
    ({"type": "message", "channel": "C1", "channel_type": "channel",
      "text": "<@UBOT> hi"}, "channel"),
    ({"type": "message", "channel": "C2", "channel_type": "group", "text": "<@UBOT> hi"},
     "group"),
    ({"type": "message", "channel": "G1", "channel_type": "group", "thread_ts": "1.0",
      "text": "more"}, "group"),
    ({"type": "message", "channel": "C3", "channel_type": "mpim", "text": "<@UBOT> hi"},
     "mpim"),
    ({"type": "message", "channel": "D1", "channel_type": "im", "text": "hi"}, "im"),
    ({"type": "message", "subtype": "file_share", "channel": "D1", "channel_type": "im",
      "text": "", "files": [{"id": "F1"}]}, "im"),
    ({"type": "message", "subtype": "thread_broadcast", "channel": "C2",
      "channel_type": "group", "thread_ts": "1.0", "text": "also"}, "group"),
    ({"type": "app_mention", "channel": "C2", "text": "<@UBOT> hi"}, ""),
])
def test_each_kind_of_event_brings_its_channel_type_to_the_turn(
    event: dict[str, Any], channel_type: str
) -> None:
    route = route_event(body({"user": "U1", "ts": "2.0", **event}), BOT,
                        max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(route, Route)
    assert route.turn.channel_type == channel_type

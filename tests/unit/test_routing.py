from __future__ import annotations

from typing import Any

import pytest

from bot.slack.routing import BotIdentity, Ignore, Route, cap_text, retry_number, route_event
from bot.turns import Turn, adk_safe, adk_user_id_for, session_id_for, thread_key
from tests.settings import default_settings

MAX_INPUT_CHARS = default_settings().max_input_chars

BOT = BotIdentity(user_id="UBOT", bot_id="BBOT", team_id="T1")


def body(event: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": event, **extra}


def test_top_level_mention_starts_a_thread_at_its_own_ts() -> None:
    r = route_event(body({"type": "app_mention", "user": "U1", "text": "<@UBOT> hi",
                          "ts": "100.1", "channel": "C1"}), BOT, max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route)
    assert r.engages and r.turn.kind == "mention"
    assert r.turn.thread_ts == "100.1" and r.turn.key == "T1:C1:100.1"
    assert not r.turn.in_existing_thread


def test_mention_inside_a_thread_uses_the_thread_and_marks_existing_thread() -> None:
    r = route_event(body({"type": "app_mention", "user": "U1", "text": "<@UBOT> and?",
                          "ts": "105.0", "thread_ts": "100.1", "channel": "C1"}), BOT,
                    max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route)
    assert r.turn.key == "T1:C1:100.1" and r.turn.in_existing_thread and r.engages


def test_message_event_with_the_bot_mention_is_a_mention_too() -> None:
    r = route_event(body({"type": "message", "user": "U1", "text": "hey <@UBOT> look",
                          "ts": "105.0", "thread_ts": "100.1", "channel": "C1",
                          "channel_type": "channel"}), BOT, max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route) and r.engages and r.turn.kind == "mention"


def test_unmentioned_thread_reply_is_a_followup_that_needs_an_engaged_thread() -> None:
    r = route_event(body({"type": "message", "user": "U2", "text": "more", "ts": "106.0",
                          "thread_ts": "100.1", "channel": "C1", "channel_type": "channel"}), BOT,
                    max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route) and not r.engages and r.turn.kind == "followup"
    assert r.turn.key == "T1:C1:100.1"


def test_top_level_channel_message_without_mention_is_ignored() -> None:
    r = route_event(body({"type": "message", "user": "U2", "text": "lunch?", "ts": "106.0",
                          "channel": "C1", "channel_type": "channel"}), BOT,
                    max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Ignore)


def test_dm_top_level_and_dm_thread() -> None:
    top = route_event(body({"type": "message", "user": "U2", "text": "hi", "ts": "1.0",
                            "channel": "D1", "channel_type": "im"}), BOT,
                      max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(top, Route) and top.engages and top.turn.kind == "dm"
    assert top.turn.key == "T1:D1:dm" and top.turn.reply_thread_ts is None
    threaded = route_event(body({"type": "message", "user": "U2", "text": "hi", "ts": "2.0",
                                 "thread_ts": "1.0", "channel": "D1", "channel_type": "im"}), BOT,
                           max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(threaded, Route) and threaded.turn.key == "T1:D1:1.0"
    assert threaded.turn.reply_thread_ts == "1.0"


@pytest.mark.parametrize("event", [
    {"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1.0",
     "message": {"user": "U1", "text": "x"}},
    {"type": "message", "subtype": "message_deleted", "channel": "C1", "ts": "1.0"},
    {"type": "message", "subtype": "channel_join", "user": "U1", "channel": "C1", "ts": "1.0",
     "text": "<@U1> has joined"},
    {"type": "message", "subtype": "bot_message", "bot_id": "B2", "channel": "C1", "ts": "1.0",
     "text": "hi", "thread_ts": "0.5"},
    {"type": "message", "user": "U9", "bot_id": "B2", "channel": "C1", "ts": "1.0",
     "text": "<@UBOT> hi"},
    {"type": "message", "user": "UBOT", "channel": "C1", "ts": "1.0", "thread_ts": "0.5",
     "text": "my own answer"},
    {"type": "reaction_added", "user": "U1"},
    {"type": "app_mention", "text": "no user", "channel": "C1", "ts": "1.0"},
    {"type": "app_mention", "user": "U1", "text": "no channel", "ts": "1.0"},
])
def test_non_user_messages_are_ignored(event: dict[str, Any]) -> None:
    assert isinstance(route_event(body(event), BOT, max_input_chars=MAX_INPUT_CHARS), Ignore)


@pytest.mark.parametrize("raw", [{}, {"event": "x"}, {"event": None}, {"event": []}])
def test_malformed_bodies_are_ignored(raw: dict[str, Any]) -> None:
    assert isinstance(route_event(raw, BOT, max_input_chars=MAX_INPUT_CHARS), Ignore)


def test_thread_broadcast_and_file_share_are_user_messages() -> None:
    for subtype in ("thread_broadcast", "file_share"):
        r = route_event(body({"type": "message", "subtype": subtype, "user": "U2", "text": "x",
                              "ts": "2.0", "thread_ts": "1.0", "channel": "C1",
                              "files": [{"id": "F1", "name": "a.csv", "secret": "no"}]}), BOT,
                        max_input_chars=MAX_INPUT_CHARS)
        assert isinstance(r, Route)
        assert r.turn.files in ([], [{"id": "F1", "name": "a.csv"}])


def test_huge_text_is_capped_and_remembers_its_length() -> None:
    text = "x" * 100_000
    r = route_event(body({"type": "app_mention", "user": "U1", "text": text, "ts": "1.0",
                          "channel": "C1"}), BOT, max_input_chars=1000)
    assert isinstance(r, Route)
    assert len(r.turn.text) == 1000 and r.turn.truncated_from == 100_000
    assert cap_text("abc", 5) == ("abc", 0)


def test_team_falls_back_to_event_then_bot() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "x", "ts": "1.0", "channel": "C1"}
    r = route_event({"event": {**event, "team": "T9"}}, BOT, max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route) and r.turn.team == "T9"
    r2 = route_event({"event": event}, BOT, max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r2, Route) and r2.turn.team == "T1"


def test_retry_number_reads_both_header_shapes() -> None:
    assert retry_number({}) == 0
    assert retry_number({"x-slack-retry-num": ["2"]}) == 2
    assert retry_number({"x-slack-retry-num": "1"}) == 1
    assert retry_number({"x-slack-retry-num": ["0"]}) == 0
    assert retry_number({"x-slack-retry-num": ["nope"]}) == 0


def test_ids_are_deterministic_and_adk_safe() -> None:
    key = thread_key("T1", "C1", "1700000000.000100")
    assert key == "T1:C1:1700000000.000100"
    sid = session_id_for(key, 0)
    assert sid == "T1-C1-1700000000_000100"
    assert session_id_for(key, 2) == "T1-C1-1700000000_000100-g2"
    assert adk_safe("a/b c.d:é") == "a_b_c_d__"
    assert adk_user_id_for("channel", "T1", "C1", key, channel_type="") == "slack-T1-C1"
    assert thread_key("T1", "D1", None) == "T1:D1:dm"


def test_turn_json_round_trip_ignores_unknown_fields() -> None:
    turn = Turn(team="T1", channel="C1", thread_ts="1.0", ts="2.0", user="U1", text="héllo",
                kind="followup", event_id="Ev", files=[{"id": "F"}])
    again = Turn.from_json(turn.to_json())
    assert again == turn
    assert Turn.from_json(turn.to_json()[:-1] + ',"future":1}') == turn


@pytest.mark.parametrize(("edited_at", "answered"), [
    ("100.1", True), ("160.0", True),  # an edit soon after posting (a mention added)
    ("100000.0", False),  # an edit of an old message: not a new question
    ("garbage", False),
])
def test_an_edited_mention_is_answered_only_soon_after_posting(edited_at: str,
                                                               answered: bool) -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "ts": "100.1",
             "channel": "C1", "edited": {"user": "U1", "ts": edited_at}}
    r = route_event(body(event), BOT, max_input_chars=MAX_INPUT_CHARS)
    assert isinstance(r, Route) == answered, r


def test_the_edit_window_never_outlasts_the_dedupe() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "ts": "100.0",
             "channel": "C1", "edited": {"user": "U1", "ts": "400.0"}}
    assert isinstance(route_event(body(event), BOT, max_input_chars=MAX_INPUT_CHARS), Route)
    assert isinstance(route_event(body(event), BOT, edit_window=120,
                                  max_input_chars=MAX_INPUT_CHARS), Ignore)

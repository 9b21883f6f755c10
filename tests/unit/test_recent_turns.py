"""The intake's memory of the turns it queued a moment ago (`RecentTurns`): the second event
of a mention (its `message` twin) is known as a duplicate without asking Redis, a
redelivery of the same event is not (Redis decides), and old turns are forgotten. The
intake and the worker around it, against a real `adk api_server`, are in
tests/integration/test_prepared_sessions.py."""

from __future__ import annotations

from bot.intake import RecentTurns
from bot.turns import Turn


def turn(ts: str, event_id: str) -> Turn:
    return Turn(team="T1", channel="C1", thread_ts=ts, ts=ts, user="U1", text="q",
                kind="mention", event_id=event_id)


def test_recent_turns_know_twins_not_redeliveries_and_forget() -> None:
    now = [0.0]
    recent = RecentTurns(size=2, ttl=10.0, clock=lambda: now[0])
    recent.add(turn("1.0", "EvA"))
    assert recent.is_twin(turn("1.0", "EvB"))  # the message twin of the mention
    assert not recent.is_twin(turn("1.0", "EvA"))  # a redelivery: Redis decides
    assert not recent.is_twin(turn("2.0", "EvC"))
    recent.add(turn("2.0", "EvC"))
    recent.add(turn("3.0", "EvD"))  # over the size: the oldest is forgotten
    assert not recent.is_twin(turn("1.0", "EvB"))
    assert recent.is_twin(turn("3.0", "EvE"))
    now[0] = 11.0
    assert not recent.is_twin(turn("3.0", "EvE"))  # expired

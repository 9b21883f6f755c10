"""Who may answer the agent's requests for a human (bot/approvals.py), the requests' asker
stored with them, the approver settings, and the intake's "stop" while the agent waits for
an answer: an answer, not a stop, found out without a Redis call for any other message."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from pydantic import ValidationError

from bot.access import AccessPolicy
from bot.adk.events import (
    CONFIRMATION,
    CREDENTIAL,
    INPUT,
    HumanRequest,
    decode_requests,
    encode_requests,
)
from bot.approvals import (
    Approvers,
    answerable,
    askers,
    may_answer,
    needs_user_groups,
    not_yours_text,
)
from bot.config import Settings
from bot.intake import Intake
from bot.metrics import Metrics
from bot.stops import Stops
from bot.store.redis_store import Store
from bot.turns import BotIdentity, Turn
from tests.fakes import slack_events as ev
from tests.settings import default_settings, default_store

CONFIRM = HumanRequest("c1", CONFIRMATION, "Delete the Q3 budget?", "delete_budget", "U1")
ASK = HumanRequest("i1", INPUT, "Which billing project?", asker="U1")
APPROVERS = Approvers(users=frozenset({"U3"}), usergroups=frozenset({"S1"}))


def test_the_asker_and_the_approvers_may_answer_and_nobody_else() -> None:
    for requests in ([CONFIRM], [ASK], [CONFIRM, ASK]):
        assert may_answer(APPROVERS, requests, user="U1", user_groups=frozenset())
        assert may_answer(APPROVERS, requests, user="U3", user_groups=frozenset())
        assert may_answer(APPROVERS, requests, user="U4", user_groups=frozenset({"S1"}))
        assert not may_answer(APPROVERS, requests, user="U2", user_groups=frozenset())
        assert not may_answer(APPROVERS, requests, user="U2", user_groups=frozenset({"S9"}))
        assert not may_answer(Approvers(), requests, user="U3", user_groups=frozenset({"S1"}))


def test_groups_are_looked_up_only_when_they_can_decide() -> None:
    assert not needs_user_groups(APPROVERS, [], "U2")  # nothing to answer
    assert not needs_user_groups(APPROVERS, [CONFIRM], "U1")  # the asker
    assert not needs_user_groups(APPROVERS, [CONFIRM], "U3")  # an approver by name
    assert not needs_user_groups(Approvers(users=frozenset({"U3"})), [CONFIRM], "U2")
    assert needs_user_groups(APPROVERS, [CONFIRM], "U2")


def test_a_request_stored_without_its_asker_is_open_to_the_thread() -> None:
    unknown = HumanRequest("c1", CONFIRMATION)
    assert askers([unknown]) == [""]
    assert may_answer(Approvers(), [unknown], user="U2", user_groups=frozenset())
    assert not needs_user_groups(APPROVERS, [unknown], "U2")


def test_the_asker_travels_with_the_stored_requests() -> None:
    stored = encode_requests([CONFIRM, ASK])
    assert decode_requests(stored) == [CONFIRM, ASK]
    # Requests stored without an asker read back with none.
    assert decode_requests('[{"id": "c1", "name": "adk_request_confirmation"}]') == [
        HumanRequest("c1", CONFIRMATION)]


def test_only_confirmations_and_inputs_are_answered_by_a_message() -> None:
    sign_in = HumanRequest("k1", CREDENTIAL, asker="U1")
    assert answerable([sign_in, CONFIRM, ASK]) == [CONFIRM, ASK]


def test_the_note_names_the_asker_and_the_request() -> None:
    assert not_yours_text(APPROVERS, [CONFIRM]) == (
        ":lock: Only <@U1> or an approver can answer the agent's approval request in this "
        "thread, so your message was not passed on to the agent.")
    assert not_yours_text(Approvers(), [ASK]) == (
        ":lock: Only <@U1> can answer the agent's question in this thread, so your message "
        "was not passed on to the agent.")


def test_approver_settings_are_slack_ids_listed_like_the_access_lists() -> None:
    settings = Settings(_env_file=None, approver_users=" u3, W4 ,U3",  # type: ignore[call-arg]
                        approver_usergroups='["S1"]')
    assert Approvers.from_settings(settings) == Approvers(frozenset({"U3", "W4"}),
                                                          frozenset({"S1"}))
    assert Settings(_env_file=None).approver_users == []  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not a Slack user group id"):
        Settings(_env_file=None, approver_usergroups="U1")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not a Slack user id"):
        Settings(_env_file=None, approver_users="S1")  # type: ignore[call-arg]


# ---- the intake: a "stop" while the agent waits for an answer --------------------------


class CommandLog:
    """Records the Redis commands a client sends."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        send = client.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.names.append(str(args[0]).upper())
            return await send(*args, **options)

        client.execute_command = execute_command


@pytest.fixture
def intake() -> tuple[Intake, Store, CommandLog]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = default_store(client, "approvals")
    settings = default_settings()
    return (Intake(store, BotIdentity(user_id="UBOT", team_id="T0001"), Metrics(),
                   Stops(store), max_input_chars=settings.max_input_chars,
                   max_queued_turns=settings.max_queued_turns,
                   access=AccessPolicy.unrestricted(settings)), store, CommandLog(client))


def reply(text: str, ts: str) -> dict[str, Any]:
    return ev.envelope(ev.message(channel="C1", user="U1", text=text, ts=ts,
                                  thread_ts="1700000000.000100"))


async def test_a_stop_while_the_agent_waits_is_queued_as_the_answer(intake: Any) -> None:
    handler, store, _log = intake
    key = "T0001:C1:1700000000.000100"
    await store.save_session(key, adk_user_id="u", session_id="s", generation=0,
                             created_by="U1")
    assert await handler.handle(reply("stop", "1700000001.000100"), {}) == "stop"
    await store.set_awaiting(key, encode_requests([CONFIRM]))
    for ts, said in (("1700000002.000100", "stop"), ("1700000003.000100", "Cancel.")):
        assert await handler.handle(reply(said, ts), {}) == "queued"
    queued = await store.redis.lrange(store.keys.queue(key), 0, -1)
    assert [Turn.from_json(raw).text for raw in queued] == ["stop", "Cancel."]
    await store.set_awaiting(key, "")
    assert await handler.handle(reply("stop", "1700000004.000100"), {}) == "stop"


async def test_only_a_stop_word_costs_the_intake_a_look_at_the_thread(intake: Any) -> None:
    handler, _store, log = intake
    await handler.handle(reply("what did BigQuery cost?", "1700000005.000100"), {})
    assert "HEXISTS" not in log.names and "HGET" not in log.names
    log.names.clear()
    await handler.handle(reply("stop", "1700000006.000100"), {})
    assert log.names.count("HEXISTS") == 1

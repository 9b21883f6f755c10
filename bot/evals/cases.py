"""Rated answers as ADK eval cases, built with ADK's own evaluation models (google-adk,
the `adk` extra): the answer's ADK session converted by ADK's
`convert_session_to_eval_invocations`, or, when ADK no longer has the session, the Slack
thread read back as invocations.

A case is the conversation up to and including the rated answer. A 👍 expects the answer
that was given; a 👎 expects the correction its voter wrote, and their reason becomes a
rubric of that last invocation. Every text goes through the export's `Pseudonyms`, and
attached files are left out (a part saying which type was attached stays).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.adk.cli.utils.evals import convert_session_to_eval_invocations
from google.adk.evaluation.eval_case import EvalCase, Invocation, SessionInput
from google.adk.evaluation.eval_rubrics import Rubric, RubricContent
from google.adk.evaluation.eval_set import EvalSet
from google.adk.sessions.session import Session
from google.genai import types

from bot.evals.pseudonyms import Pseudonyms
from bot.store.feedback import Rating, StoredVote

_ID_CHARS = re.compile(r"[^A-Za-z0-9_]")  # ADK's eval set and case ids: ^[a-zA-Z0-9_]+$
# What ADK's Session model reads of `GET` the session (it refuses other fields, which a
# newer ADK server may send).
_SESSION_FIELDS = frozenset(
    {name for name in Session.model_fields}
    | {field.alias for field in Session.model_fields.values() if field.alias})
STATE_USER_ID = "slack_user_id"  # what the bot puts in each turn's stateDelta
STATE_USER_NAME = "slack_user_name"


class NotInSession(Exception):
    """The rated answer is not in the session ADK returned (the session was recreated)."""


@dataclass(frozen=True)
class RatedAnswer:
    """One answer's verdict from its voters' votes (each voter's last vote counts)."""

    thread_key: str  # team:channel:thread_ts
    turn_ts: str  # the question the answer replied to
    rating: Rating  # the majority's
    tied: bool  # as many 👍 as 👎: no verdict
    at: float  # when the latest vote was cast
    session_id: str
    invocation_id: str
    correction: str  # the latest 👎 voter's correction ("" if none wrote one)
    why: str
    up: int
    down: int

    @property
    def channel(self) -> str:
        return self.thread_key.split(":")[1]

    @property
    def thread_ts(self) -> str:
        return self.thread_key.split(":")[2]

    @property
    def eval_id(self) -> str:
        return eval_id_of(self.thread_key, self.turn_ts)


def eval_id_of(thread_key: str, turn_ts: str) -> str:
    """The eval id of the answer to `turn_ts` in a thread: `<channel>_<thread ts>_<ts>`."""
    _team, channel, thread_ts = thread_key.split(":")
    return _ID_CHARS.sub("_", f"{channel}_{thread_ts}_{turn_ts}")


def verdict(thread_key: str, turn_ts: str, votes: Mapping[str, StoredVote]
            ) -> RatedAnswer | None:
    """The answer's verdict from its votes, or None if nobody voted. Each voter's vote is
    their last one; the rating is the majority's (`tied` when there are as many 👍 as 👎).
    A 👎 takes the latest correction any 👎 voter wrote, with that voter's reason (else
    the latest reason given)."""
    if not votes:
        return None
    ordered = sorted(votes.values(), key=lambda vote: vote.at)
    up = sum(v.rating == "up" for v in ordered)
    down = len(ordered) - up
    downs = [v for v in ordered if v.rating == "down"]
    corrected = [v for v in downs if v.correction.strip()]
    reasoned = [v for v in downs if v.why.strip()]
    note = corrected[-1] if corrected else None
    why = note.why.strip() if note is not None and note.why.strip() else (
        reasoned[-1].why.strip() if reasoned else "")
    latest = ordered[-1]
    return RatedAnswer(
        thread_key=thread_key, turn_ts=turn_ts,
        rating="up" if up > down else "down", tied=up == down, at=latest.at,
        session_id=latest.session_id, invocation_id=latest.invocation_id,
        correction=note.correction.strip() if note is not None else "", why=why,
        up=up, down=down,
    )


# ---- from the ADK session ------------------------------------------------------------


def _scrub_value(value: Any, pseudonyms: Pseudonyms) -> Any:
    if isinstance(value, str):
        return pseudonyms.scrub(value)
    if isinstance(value, list):
        return [_scrub_value(item, pseudonyms) for item in value]
    if isinstance(value, dict):
        return {key: _scrub_value(item, pseudonyms) for key, item in value.items()}
    return value


def _scrub_part(part: Any, pseudonyms: Pseudonyms) -> Any:
    if not isinstance(part, dict):
        return part
    inline = part.get("inlineData") or part.get("inline_data")
    if isinstance(inline, dict):
        mime = inline.get("mimeType") or inline.get("mime_type") or "a file"
        return {"text": f"[attached: {mime}]"}
    return _scrub_value(part, pseudonyms)


def _events(session: Mapping[str, Any]) -> list[dict[str, Any]]:
    events = session.get("events")
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def _user_state(event: Mapping[str, Any]) -> dict[str, Any]:
    """The state a person's turn sent with it (empty for any other event)."""
    actions = event.get("actions")
    delta = actions.get("stateDelta") if isinstance(actions, dict) else None
    return delta if event.get("author") == "user" and isinstance(delta, dict) else {}


def speakers(session: Mapping[str, Any]) -> dict[str, str]:
    """The speakers of the session's turns (user id -> the name the turn gave), from the
    state each turn sent with it."""
    found: dict[str, str] = {}
    for event in _events(session):
        delta = _user_state(event)
        user, name = delta.get(STATE_USER_ID), delta.get(STATE_USER_NAME)
        if isinstance(user, str) and user and isinstance(name, str):
            found[user] = name
    return found


# Event fields that hold no one's words: kept as they are.
_STRUCTURE = frozenset({"id", "invocationId", "author", "branch", "timestamp", "partial",
                        "turnComplete", "modelVersion", "finishReason", "usageMetadata"})


def scrub_session(session: Mapping[str, Any], pseudonyms: Pseudonyms) -> dict[str, Any]:
    """A copy of an ADK session (JSON) with its speakers' names and Slack ids replaced in
    every event field that can hold words (content, tool calls and responses, state,
    grounding, errors), attached files left out, and only the session fields ADK's own
    model reads."""
    for user, name in speakers(session).items():
        pseudonyms.learn(user, name)
    data = {key: copy.deepcopy(value) for key, value in session.items()
            if key in _SESSION_FIELDS}
    events: list[Any] = []
    for event in _events(data):
        scrubbed: dict[str, Any] = {}
        for key, value in event.items():
            if key in _STRUCTURE:
                scrubbed[key] = value
            elif key == "customMetadata":
                continue  # the bot's Slack ids of the turn
            elif key == "content" and isinstance(value, dict) and isinstance(
                    value.get("parts"), list):
                parts = [_scrub_part(part, pseudonyms) for part in value["parts"]]
                scrubbed[key] = {**value, "parts": parts}
            else:
                scrubbed[key] = _scrub_value(value, pseudonyms)
        events.append(scrubbed)
    data["events"] = events
    if isinstance(data.get("state"), dict):
        data["state"] = _scrub_value(data["state"], pseudonyms)
    return data


def _first_state(session: Mapping[str, Any]) -> dict[str, Any]:
    """The state the first turn set (who asked), as the eval's starting state."""
    for event in _events(session):
        delta = _user_state(event)
        if STATE_USER_ID in delta:
            return {k: v for k, v in delta.items() if k in (STATE_USER_ID, STATE_USER_NAME)}
    return {}


def _expect(invocation: Invocation, rated: RatedAnswer, pseudonyms: Pseudonyms) -> None:
    """A 👎's correction as the expected answer, its reason as a rubric."""
    if rated.rating != "down":
        return
    invocation.final_response = types.Content(
        role="model", parts=[types.Part(text=pseudonyms.scrub(rated.correction))])
    if rated.why:
        invocation.rubrics = [Rubric(
            rubric_id="slack_feedback_why",
            rubric_content=RubricContent(text_property=(
                "The response does not have the problem a user reported in an earlier "
                f"answer: {pseudonyms.scrub(rated.why)}")),
            description="What a Slack user said was wrong when voting the answer down",
        )]


class NotReplayable(Exception):
    """The conversation has a turn `adk eval` cannot ask again (it answered the agent's
    request for an approval or input, which a fresh session never made)."""


def _asks(invocation: Invocation) -> bool:
    return any(part.text for part in invocation.user_content.parts or [])


def case_from_session(session: Mapping[str, Any], rated: RatedAnswer, *, app_name: str,
                      pseudonyms: Pseudonyms) -> EvalCase:
    """The rated answer's case from its ADK session (GET the session: JSON). NotInSession
    if the session does not hold the rated invocation; NotReplayable if a turn up to it
    answered the agent's request (approvals, input) instead of asking. The thread's
    earlier messages the session was seeded with (events of no invocation) are left out."""
    scrubbed = scrub_session(session, pseudonyms)
    invocations = [invocation for invocation in convert_session_to_eval_invocations(
        Session.model_validate(scrubbed)) if invocation.invocation_id]
    ids = [invocation.invocation_id for invocation in invocations]
    if not rated.invocation_id or rated.invocation_id not in ids:
        raise NotInSession(rated.invocation_id)
    kept = invocations[:ids.index(rated.invocation_id) + 1]
    if not all(_asks(invocation) for invocation in kept):
        raise NotReplayable(rated.invocation_id)
    _expect(kept[-1], rated, pseudonyms)
    return EvalCase(
        eval_id=rated.eval_id, conversation=kept,
        session_input=SessionInput(app_name=app_name, user_id=str(scrubbed.get("userId") or ""),
                                   state=_first_state(scrubbed)),
        creation_timestamp=rated.at,
    )


# ---- from the Slack thread -----------------------------------------------------------


@dataclass(frozen=True)
class ThreadMessage:
    ts: str
    user: str  # the author's user id ("" for a bot without one)
    text: str
    from_bot: bool  # the bot's own message (an answer)


def case_from_thread(messages: Sequence[ThreadMessage], rated: RatedAnswer, *,
                     app_name: str, user_id: str, names: Mapping[str, str],
                     pseudonyms: Pseudonyms) -> EvalCase | None:
    """The rated answer's case from the Slack thread itself: each person's message the bot
    answered a question ("<name>: <text>", as the bot asks the agent), the bot's messages
    after it the answer; messages nobody answered (before the bot was asked, say) are left
    out, like a session's seeded ones. None if the thread no longer holds the rated
    question, or no answer to it."""
    for user, name in names.items():
        pseudonyms.learn(user, name)
    asked: list[tuple[ThreadMessage, list[str]]] = []
    for message in sorted(messages, key=lambda m: float(m.ts)):
        if message.from_bot:
            if asked and message.text.strip():
                asked[-1][1].append(pseudonyms.scrub(message.text))
            continue
        if asked and asked[-1][0].ts == rated.turn_ts:
            break  # the conversation after the rated answer is not part of the case
        asked.append((message, []))
    turns = [(message, texts) for message, texts in asked if texts]
    if not turns or turns[-1][0].ts != rated.turn_ts:
        return None
    invocations: list[Invocation] = []
    for message, texts in turns:
        speaker = pseudonyms.scrub(names.get(message.user, message.user))
        invocations.append(Invocation(
            invocation_id=_ID_CHARS.sub("_", f"slack_{message.ts}"),
            user_content=types.Content(role="user", parts=[
                types.Part(text=f"{speaker}: {pseudonyms.scrub(message.text)}")]),
            final_response=types.Content(role="model", parts=[
                types.Part(text="\n\n".join(texts))]),
            creation_timestamp=float(message.ts),
        ))
    _expect(invocations[-1], rated, pseudonyms)
    first = turns[0][0]
    state = {STATE_USER_ID: pseudonyms.of(first.user),
             STATE_USER_NAME: pseudonyms.scrub(names.get(first.user, first.user))}
    return EvalCase(
        eval_id=rated.eval_id, conversation=invocations,
        session_input=SessionInput(app_name=app_name, user_id=user_id, state=state),
        creation_timestamp=rated.at,
    )


# ---- the set -------------------------------------------------------------------------


def eval_set(set_id: str, cases: Sequence[EvalCase], *, description: str) -> EvalSet:
    return EvalSet(eval_set_id=_ID_CHARS.sub("_", set_id), name=set_id,
                   description=description, eval_cases=list(cases),
                   creation_timestamp=max((c.creation_timestamp for c in cases), default=0.0))


@dataclass(frozen=True)
class Written:
    path: Path
    kept: int  # cases of earlier exports left in the set
    removed: int  # cases of earlier exports taken out (`drop`)


def write_eval_set(directory: Path, evals: EvalSet, *, drop: Set[str] = frozenset()
                   ) -> Written | None:
    """`<directory>/<set id>.evalset.json`, written whole (a temporary file renamed). The
    cases of an earlier export in that file are kept, except those this one replaces (the
    same eval id) and those in `drop`. None if there was nothing to write (no new case,
    nothing to drop). ValueError if the file there is not an eval set."""
    path = directory / f"{evals.eval_set_id}.evalset.json"
    earlier: list[EvalCase] = []
    if path.exists():
        try:
            earlier = EvalSet.model_validate_json(path.read_bytes()).eval_cases
        except ValueError as exc:
            raise ValueError(f"{path} is there and is not an eval set ({type(exc).__name__}); "
                             "move it away or choose another --name") from exc
    new_ids = {case.eval_id for case in evals.eval_cases}
    kept = [case for case in earlier if case.eval_id not in new_ids | set(drop)]
    removed = sum(case.eval_id in drop and case.eval_id not in new_ids for case in earlier)
    if not evals.eval_cases and not removed:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    merged = evals.model_copy(update={"eval_cases": kept + list(evals.eval_cases)})
    partial = path.with_name(path.name + ".partial")
    partial.write_text(merged.model_dump_json(indent=2, exclude_none=True), encoding="utf-8")
    partial.replace(path)
    return Written(path=path, kept=len(kept), removed=removed)

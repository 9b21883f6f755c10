"""The eval export's pure parts: pseudonyms, an answer's verdict from its votes, and eval
cases from an ADK session (JSON as `GET` the session returns it) or a Slack thread."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.evals.cases import (
    NotInSession,
    NotReplayable,
    ThreadMessage,
    case_from_session,
    case_from_thread,
    eval_set,
    scrub_session,
    verdict,
    write_eval_set,
)
from bot.evals.pseudonyms import Pseudonyms
from bot.store.feedback import StoredVote

KEY = "T1:C1:1700000000.000100"


def test_pseudonyms_are_stable_keyed_and_replace_names_and_ids() -> None:
    one, again = Pseudonyms(key=b"k1"), Pseudonyms(key=b"k1")
    assert one.of("U0AAAAAAAA1") == again.of("U0AAAAAAAA1")
    assert one.of("U0AAAAAAAA1") != Pseudonyms(key=b"k2").of("U0AAAAAAAA1")
    assert one.of("U0AAAAAAAA1") != one.of("U0AAAAAAAA2")
    assert Pseudonyms().of("U0AAAAAAAA1").startswith("person-")  # unkeyed, still stable
    alice = one.of("U0AAAAAAAA1")
    one.learn("U0AAAAAAAA1", "Ali")
    one.learn("U0AAAAAAAA1", "Ali Baba (ops)")
    one.learn("U0AAAAAAAA1", "A")  # too short: would replace letters
    assert one.scrub("Ali Baba (ops) and Ali asked; Alibaba is a company, @Ali too") == (
        f"{alice} and {alice} asked; Alibaba is a company, @{alice} too")
    assert one.scrub("<@U0AAAAAAAA1> <@W0BBBBBBBB|bob> U0AAAAAAAA1") == (
        f"{alice} {one.of('W0BBBBBBBB')} {alice}")
    # whole names in any case, and the capitalised parts of a name as written
    carol = one.of("U0CCCCCCCC3")
    one.learn("U0CCCCCCCC3", "Carol  Bill Diaz")
    assert one.scrub("thanks CAROL BILL DIAZ, carol bill diaz and Diaz; Bill pays the bill") == (
        f"thanks {carol}, {carol} and {carol}; {carol} pays the bill")
    # uppercase words are not ids; e-mail addresses are people's
    assert one.scrub("CPU UTILIZATION in WAREHOUSE1") == "CPU UTILIZATION in WAREHOUSE1"
    assert one.scrub("ask Dave.Smith+x@Example.com") == (
        f"ask {one.of('dave.smith+x@example.com')}@example.invalid")
    kept = Pseudonyms(keep_names=True)
    kept.learn("U1", "Ali")
    assert kept.of("U1") == "U1" and kept.scrub("Ali <@U1>") == "Ali <@U1>"


def _vote(rating: str, at: float, correction: str = "", why: str = "") -> StoredVote:
    return StoredVote(rating, "s1", "e-1", at, correction=correction, why=why)  # type: ignore[arg-type]


def test_the_majority_of_the_voters_last_votes_decides_and_a_down_takes_a_correction(
) -> None:
    assert verdict(KEY, "1.1", {}) is None
    rated = verdict(KEY, "1700000000.000200", {
        "U1": _vote("down", 10, "old fix", "old why"),
        "U2": _vote("up", 20),
        "U3": _vote("down", 30, "new fix  ", ""),
        "U4": _vote("down", 40, "", "a later reason without a fix"),
    })
    assert rated is not None
    assert (rated.rating, rated.tied, rated.at, rated.correction, rated.why, rated.up,
            rated.down) == ("down", False, 40, "new fix", "a later reason without a fix", 1, 3)
    assert (rated.channel, rated.thread_ts) == ("C1", "1700000000.000100")
    assert rated.eval_id == "C1_1700000000_000100_1700000000_000200"
    # the correction's own reason goes with it
    paired = verdict(KEY, "1.1", {"U1": _vote("down", 1, "fix", "why"), "U2": _vote("down", 2)})
    assert paired is not None and (paired.correction, paired.why) == ("fix", "why")
    # one 👍 after 👎s does not make the answer golden; a tie is no verdict
    mostly_down = verdict(KEY, "1.1", {"U1": _vote("down", 1, "fix"), "U2": _vote("down", 2),
                                      "U3": _vote("up", 3)})
    assert mostly_down is not None and (mostly_down.rating, mostly_down.tied) == ("down", False)
    tied = verdict(KEY, "1.1", {"U1": _vote("down", 1, "fix"), "U2": _vote("up", 2)})
    assert tied is not None and tied.tied


def _event(author: str, text: str, invocation: str, **extra: Any) -> dict[str, Any]:
    return {"author": author, "invocationId": invocation, "id": f"{invocation}-{author}",
            "timestamp": 1.0, "content": {"role": "user" if author == "user" else "model",
                                          "parts": [{"text": text}]}, **extra}


def _session() -> dict[str, Any]:
    delta = {"stateDelta": {"slack_user_id": "U1", "slack_user_name": "Alice"}}
    return {
        "id": "s1", "appName": "finops", "userId": "slack-T1-C1",
        "state": {"slack_user_id": "U1", "slack_user_name": "Alice"},
        "aNewerServerField": {"x": 1},
        "events": [
            # the thread's earlier messages the session was seeded with: no invocation
            {"author": "user", "content": {"role": "user", "parts": [
                {"text": "Carol Diaz: our bill doubled"}]}},
            {"author": "agent", "content": {"role": "model", "parts": [{"text": "Noted."}]}},
            _event("user", "Alice: spend?", "e-1", actions=delta,
                   customMetadata={"slack_user": "U1"}),
            _event("agent", "Alice, it was $10.", "e-1",
                   groundingMetadata={"webSearchQueries": ["Alice Adams bill"]}),
            {"author": "user", "invocationId": "e-2", "id": "x", "timestamp": 2.0,
             "actions": {"stateDelta": {"slack_user_id": "U2", "slack_user_name": "Bob"}},
             "content": {"role": "user", "parts": [
                 {"text": "Bob: and this file?"},
                 {"inlineData": {"mimeType": "text/csv", "data": "c2VjcmV0"}}]}},
            _event("agent", "Bob, the file says $20.", "e-2"),
            _event("user", "Alice: thanks", "e-3", actions=delta),
            _event("agent", "You're welcome.", "e-3"),
        ],
    }


def test_a_session_is_scrubbed_and_cut_at_the_rated_answer() -> None:
    pseudonyms = Pseudonyms(key=b"k")
    alice, bob = pseudonyms.of("U1"), pseudonyms.of("U2")
    pseudonyms.learn("U3", "Carol Diaz")  # as the export learns her from the Slack thread
    pseudonyms.learn("U1", "Alice Adams")
    scrubbed = scrub_session(_session(), pseudonyms)
    text = json.dumps(scrubbed)
    assert "Alice" not in text and "Bob" not in text and "c2VjcmV0" not in text
    assert "Carol" not in text and "customMetadata" not in text
    assert "aNewerServerField" not in text
    assert scrubbed["events"][3]["groundingMetadata"] == {"webSearchQueries": [f"{alice} bill"]}
    assert scrubbed["events"][4]["content"]["parts"][1] == {"text": "[attached: text/csv]"}
    assert scrubbed["state"] == {"slack_user_id": alice, "slack_user_name": alice}

    rated = verdict(KEY, "1700000000.000200", {"U9": StoredVote("up", "s1", "e-2", 5.0)})
    assert rated is not None
    case = case_from_session(_session(), rated, app_name="finops", pseudonyms=pseudonyms)
    assert case.conversation is not None
    assert [i.invocation_id for i in case.conversation] == ["e-1", "e-2"]
    assert case.conversation[1].final_response is not None
    assert case.conversation[1].final_response.parts is not None
    assert case.conversation[1].final_response.parts[0].text == f"{bob}, the file says $20."
    assert case.session_input is not None
    assert (case.session_input.app_name, case.session_input.user_id) == ("finops",
                                                                         "slack-T1-C1")
    assert case.session_input.state == {"slack_user_id": alice, "slack_user_name": alice}
    gone = verdict(KEY, "1.1", {"U9": StoredVote("up", "s1", "e-404", 5.0)})
    assert gone is not None
    with pytest.raises(NotInSession):
        case_from_session(_session(), gone, app_name="finops", pseudonyms=pseudonyms)
    # a turn that answered the agent's request (an approval) cannot be asked again
    resumed = _session()
    resumed["events"][4]["content"]["parts"] = [
        {"functionResponse": {"id": "c1", "name": "adk_request_confirmation",
                              "response": {"confirmed": True}}}]
    with pytest.raises(NotReplayable):
        case_from_session(resumed, rated, app_name="finops", pseudonyms=pseudonyms)


@pytest.mark.parametrize("session", [
    {},
    {"events": "junk", "state": []},
    {"events": [None, 1, {"author": "user", "actions": "x", "content": {"parts": "x"}}]},
])
def test_odd_sessions_scrub_without_failing(session: dict[str, Any]) -> None:
    assert isinstance(scrub_session(session, Pseudonyms()), dict)


def test_a_slack_thread_becomes_a_case_up_to_the_rated_answer(tmp_path: Any) -> None:
    pseudonyms = Pseudonyms(key=b"k")
    alice, bob = pseudonyms.of("U1"), pseudonyms.of("U2")
    messages = [
        ThreadMessage("99.000001", "U2", "nobody answered this", from_bot=False),
        ThreadMessage("100.000001", "U1", "spend? Bob knows", from_bot=False),
        ThreadMessage("100.000002", "UBOT", "It was $10.", from_bot=True),
        ThreadMessage("100.000003", "UBOT", "(part two)", from_bot=True),
        ThreadMessage("100.000004", "U2", "and Alice's?", from_bot=False),
        ThreadMessage("100.000005", "UBOT", "Alice spent $5.", from_bot=True),
        ThreadMessage("100.000006", "U1", "later question", from_bot=False),
        ThreadMessage("100.000007", "UBOT", "later answer", from_bot=True),
    ]
    names = {"U1": "Alice", "U2": "Bob"}
    rated = verdict(KEY, "100.000004", {"U1": _vote("down", 9, "Alice spent $7.", "typo")})
    assert rated is not None
    case = case_from_thread(messages, rated, app_name="finops", user_id="slack-T1-C1",
                            names=names, pseudonyms=pseudonyms)
    assert case is not None and case.conversation is not None
    turns = [(i.user_content.parts[0].text if i.user_content.parts else None,
              i.final_response.parts[0].text if i.final_response and i.final_response.parts
              else None) for i in case.conversation]
    assert turns == [(f"{alice}: spend? {bob} knows", "It was $10.\n\n(part two)"),
                     (f"{bob}: and {alice}'s?", f"{alice} spent $7.")]
    assert case.session_input is not None
    assert case.session_input.state == {"slack_user_id": alice, "slack_user_name": alice}
    missing = verdict(KEY, "100.000099", {"U1": _vote("up", 9)})
    assert missing is not None
    assert case_from_thread(messages, missing, app_name="finops", user_id="u", names=names,
                            pseudonyms=pseudonyms) is None

    written = write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [case],
                                                        description="d"))
    assert written is not None
    path = written.path
    assert (path.name, written.kept, written.removed) == (
        "slack_feedback_down.evalset.json", 0, 0)
    assert json.loads(path.read_text())["eval_cases"][0]["eval_id"] == rated.eval_id
    assert not list((tmp_path / "out").glob("*.partial"))
    # a later export adds to the set: the same case replaced, earlier ones kept
    other = case.model_copy(update={"eval_id": "C1_other"})
    write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [case, other],
                                              description="d"))
    written = write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [case],
                                                        description="d"))
    assert written is not None and (written.kept, written.removed) == (1, 0)
    assert sorted(c["eval_id"] for c in json.loads(path.read_text())["eval_cases"]) == sorted(
        ["C1_other", rated.eval_id])
    # a case whose vote changed leaves the set; nothing new and nothing to drop: no write
    written = write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [],
                                                        description="d"), drop={"C1_other"})
    assert written is not None and (written.kept, written.removed) == (1, 1)
    assert [c["eval_id"] for c in json.loads(path.read_text())["eval_cases"]] == [
        rated.eval_id]
    assert write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [],
                                                     description="d"), drop={"gone"}) is None
    path.write_text("not an eval set")
    with pytest.raises(ValueError, match="is not an eval set"):
        write_eval_set(tmp_path / "out", eval_set("slack-feedback_down", [case],
                                                  description="d"))
    assert path.read_text() == "not an eval set"


def test_an_answer_leaves_the_sets_its_verdict_no_longer_belongs_to() -> None:
    from bot.cli.evals import Export

    found = Export()
    found.place("moved", "down", case=object(), from_thread=False)  # type: ignore[arg-type]
    found.place("filtered", "up")  # a 👍, not exported by this --rating down run
    found.place("tied", None)
    found.place("rebuilt", "up", case=object(), from_thread=True)  # type: ignore[arg-type]
    assert {kind: sorted(ids) for kind, ids in found.drop.items()} == {
        "down": ["filtered", "rebuilt", "tied"],
        "down_from_threads": ["filtered", "moved", "rebuilt", "tied"],
        "up": ["moved", "rebuilt", "tied"],
        "up_from_threads": ["moved", "tied"],
    }
    assert found.count(from_thread=False) == 1 and found.count(from_thread=True) == 1

"""`python -m bot evals export` end to end: answers of the real bot (the test agent on a
real `adk api_server`, the fake Slack) rated by clicks on their feedback buttons, exported
as ADK eval sets, and the sets run by the real `adk eval`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from google.adk.evaluation.eval_case import get_all_tool_calls
from google.adk.evaluation.eval_set import EvalSet

from bot.evals.pseudonyms import Pseudonyms
from bot.slack.feedback_modal import NOTE_CALLBACK_ID, NOTE_KEPT
from bot.store.keys import Keys
from tests.conftest import REAL_REDIS_URL
from tests.fakes.adk_server import AGENTS_DIR, AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import click_feedback, say, submit_view, wait_replies
from tests.integration.test_cli import cli_env, run_cli

TEAM = "T0001"
PSEUDONYM_KEY = "test-pseudonym-key"
CRITERIA = {"criteria": {"tool_trajectory_avg_score": 1.0, "response_match_score": 0.5}}


async def vote(slack: FakeSlack, bot: BotProcess, *, root: str, answer: dict[str, Any],
               rating: str, user: str, note: dict[str, str | None] | None = None) -> None:
    """`user` clicks 👍/👎 under `answer`. A 👍 is thanked; a 👎 opens the note form, which
    `note` fills in and sends (None: the form is dismissed)."""
    told = len(slack.ephemerals)
    trigger = await click_feedback(slack, bot, answer, rating, user=user, thread_ts=root)
    if rating == "up":
        await slack.wait_for(lambda s: len(s.ephemerals) > told, timeout=10)
        return
    await slack.wait_for_calls("views.open", 1, trigger_id=trigger)
    if note is not None:
        view = slack.opened_views(NOTE_CALLBACK_ID)[-1]
        await submit_view(slack, bot, view["id"], note)
        await slack.wait_for(lambda s: len(s.ephemerals) > told, timeout=10)
        assert slack.ephemerals[-1]["text"] == NOTE_KEPT


async def ask(slack: FakeSlack, bot: BotProcess, text: str, *, user: str = "U1",
              root: str | None = None, mention: bool = False
              ) -> tuple[str, str, dict[str, Any]]:
    """A question (a mention, or a follow-up in `root`): (root, ts, the answer)."""
    before = len(slack.bot_replies("C1", root)) if root else 0
    ts = await say(slack, bot, user=user, text=text, mention=mention or root is None,
                   thread_ts=root)
    root = root or ts
    await wait_replies(slack, "C1", root, before + 1, timeout=30)
    return root, ts, slack.bot_replies("C1", root)[-1]


def exported(path: Path) -> EvalSet:
    return EvalSet.model_validate_json(path.read_text(encoding="utf-8"))


def text_of(content: Any) -> str:
    return "".join(part.text or "" for part in content.parts)


async def adk_eval(agent_dir: Path, evalset: Path, config: Path) -> tuple[int, str]:
    """The real `adk eval` on a set: its exit code and its output."""
    adk = Path(sys.executable).with_name("adk")
    proc = await asyncio.create_subprocess_exec(
        str(adk), "eval", str(agent_dir), str(evalset), "--config_file_path", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    """A copy of the test agent: `adk eval` writes its results beside the agent."""
    return Path(shutil.copytree(AGENTS_DIR / "test_agent", tmp_path / "test_agent"))


async def test_rated_answers_become_eval_sets_that_adk_eval_runs(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer, prefix: str,
    real_redis: aioredis.Redis, tmp_path: Path, agent_dir: Path,
) -> None:
    # A thread Alice starts and Bob follows up in; Bob likes the second answer.
    liked, _, _ = await ask(slack, bot, "what did we spend? tool")
    _, liked_ts, liked_answer = await ask(slack, bot, "and Alice asked for the top one?",
                                         user="U2", root=liked)
    await vote(slack, bot, root=liked, answer=liked_answer, rating="up", user="U2")
    # Alice dislikes an answer and writes what it should have said.
    disliked, disliked_ts, disliked_answer = await ask(slack, bot, "forecast next month")
    await vote(slack, bot, root=disliked, answer=disliked_answer, rating="down", user="U1",
               note={"correction": "Next month: $4,500, as Alice Adams forecast.",
                     "why": "It gave no forecast at all."})
    # A 👍 changed to a 👎 whose form was dismissed: nothing to expect.
    bare, _, bare_answer = await ask(slack, bot, "hello")
    await vote(slack, bot, root=bare, answer=bare_answer, rating="up", user="U1")
    await vote(slack, bot, root=bare, answer=bare_answer, rating="down", user="U1")
    # A thread Carol started before anyone asked the bot (the session is seeded with her
    # message), mentioning Dave, who never speaks; Alice asks about it and likes the answer.
    slack.add_user("U3", "carol", real_name="Carol Diaz", display_name="Carol")
    slack.add_user("U4", "dave", real_name="Dave Smith", display_name="Dave")
    seeded = slack.add_message("C1", user="U3", text="our GCP bill doubled, ask <@U4>")
    _, seeded_ts, seeded_answer = await ask(slack, bot, "<@U4> says why?", root=seeded,
                                            mention=True)
    await vote(slack, bot, root=seeded, answer=seeded_answer, rating="up", user="U1")

    out_dir = tmp_path / "evals"
    env = cli_env(slack, adk, prefix, eval_pseudonym_key=PSEUDONYM_KEY)
    code, out, err = await run_cli("evals", "export", "--rating", "all", "--since", "1d",
                                   "--out", str(out_dir), env=env, timeout=120)
    assert (code, err) == (0, "")
    down_path, up_path = out_dir / "slack_feedback_down.evalset.json", \
        out_dir / "slack_feedback_up.evalset.json"
    assert out.splitlines() == [
        f"skipped {TEAM}:C1:{bare} answer to {bare}: voted down without a correction "
        "(nothing to expect)",
        f"wrote {down_path}: 1 case",
        f"wrote {up_path}: 2 cases",
        "3 cases: 3 from ADK sessions, 0 from Slack threads; 1 skipped",
    ]
    alice, bob, carol, dave = (Pseudonyms(key=PSEUDONYM_KEY.encode()).of(u)
                               for u in ("U1", "U2", "U3", "U4"))
    for path in (down_path, up_path):
        raw = path.read_text(encoding="utf-8")
        found = re.findall(r"Alice|Adams|Bob|Carol|Diaz|Dave|Smith|\bU[1-4]\b", raw)
        assert not found, (path.name, found)

    # 👍: the conversation up to the liked answer, expecting the answers given.
    case, seeded_case = exported(up_path).eval_cases
    assert case.eval_id == f"C1_{liked}_{liked_ts}".replace(".", "_")
    assert case.conversation is not None and len(case.conversation) == 2
    first, second = case.conversation
    assert text_of(first.user_content).endswith(f"{alice}: what did we spend? tool")
    assert text_of(second.user_content) == f"{bob}: and {alice} asked for the top one?"
    assert f"said={bob}: and {alice} asked for the top one?" in text_of(second.final_response)
    assert [call.name for call in get_all_tool_calls(first.intermediate_data)] == [
        "query_cost_data"]
    assert case.session_input is not None and case.session_input.app_name == "test_agent"
    assert case.session_input.state == {"slack_user_id": alice, "slack_user_name": alice}

    # The seeded thread: Carol's message is context the agent had, not a turn to replay.
    assert seeded_case.eval_id == f"C1_{seeded}_{seeded_ts}".replace(".", "_")
    assert seeded_case.conversation is not None
    [asked] = seeded_case.conversation
    assert text_of(asked.user_content) == f"{alice}: @{dave} says why?"
    assert f"history[1]: {carol}: our GCP bill doubled, ask @{dave}" in text_of(
        asked.final_response)

    # 👎: expecting the correction; the reason is the last invocation's rubric.
    [case] = exported(down_path).eval_cases
    assert case.eval_id == f"C1_{disliked}_{disliked_ts}".replace(".", "_")
    assert case.conversation is not None and len(case.conversation) == 1
    [only] = case.conversation
    assert text_of(only.user_content).endswith(f"{alice}: forecast next month")
    assert text_of(only.final_response) == f"Next month: $4,500, as {alice} forecast."
    assert only.rubrics is not None
    assert [r.rubric_content.text_property for r in only.rubrics] == [
        "The response does not have the problem a user reported in an earlier answer: "
        "It gave no forecast at all."]

    # The real `adk eval` runs both: the liked answer passes, the correction is not what
    # the agent says yet, so that case fails until the agent is fixed.
    config = tmp_path / "test_config.json"
    config.write_text(json.dumps(CRITERIA), encoding="utf-8")
    code, output = await adk_eval(agent_dir, up_path, config)
    assert code == 0, output
    assert "Tests passed: 2\n  Tests failed: 0" in output
    code, output = await adk_eval(agent_dir, down_path, config)
    assert code == 1, output
    assert "Tests passed: 0\n  Tests failed: 1" in output

    # Bob changes his mind about the liked answer: the next export moves its case from the
    # 👍 set to the 👎 set, and keeps the others.
    await vote(slack, bot, root=liked, answer=liked_answer, rating="down", user="U2",
               note={"correction": "The top one was BigQuery.", "why": None})
    code, out, err = await run_cli("evals", "export", "--since", "1d", "--out", str(out_dir),
                                   env=env, timeout=120)
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        f"wrote {down_path}: 2 cases",
        f"wrote {up_path}: 1 case, 1 removed (their votes changed)",
        "3 cases: 3 from ADK sessions, 0 from Slack threads; 1 skipped",
    ]
    assert [c.eval_id for c in exported(up_path).eval_cases] == [seeded_case.eval_id]
    assert sorted(c.eval_id for c in exported(down_path).eval_cases) == sorted(
        [case.eval_id, f"C1_{liked}_{liked_ts}".replace(".", "_")])


async def test_a_session_adk_lost_is_exported_from_the_slack_thread(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer, prefix: str,
    real_redis: aioredis.Redis, tmp_path: Path,
) -> None:
    root, _, _ = await ask(slack, bot, "what did we spend?")
    _, ts, answer = await ask(slack, bot, "and last week?", user="U2", root=root)
    await vote(slack, bot, root=root, answer=answer, rating="up", user="U1")
    record = await real_redis.hgetall(Keys(prefix).thread(f"{TEAM}:C1:{root}"))
    async with httpx.AsyncClient(base_url=adk.base_url) as client:
        gone = await client.delete(f"/apps/test_agent/users/{record['adk_user_id']}/sessions/"
                                   f"{record['session_id']}")
    assert gone.status_code == 200

    out_dir = tmp_path / "evals"
    code, out, err = await run_cli("evals", "export", "--rating", "up", "--out", str(out_dir),
                                   "--keep-names", env=cli_env(slack, adk, prefix))
    assert (code, err) == (0, "")
    path = out_dir / "slack_feedback_up_from_threads.evalset.json"
    assert out.splitlines() == [f"wrote {path}: 1 case",
                                "1 case: 0 from ADK sessions, 1 from Slack threads; 0 skipped"]
    [case] = exported(path).eval_cases
    assert case.conversation is not None
    assert [text_of(i.user_content) for i in case.conversation] == [
        "Alice: what did we spend?", "Bob: and last week?"]
    # the answers as the thread shows them
    shown = [m for m in slack.bot_replies("C1", root)]
    assert [text_of(i.final_response) for i in case.conversation] == [
        m["text"] for m in shown]
    assert case.conversation[-1].invocation_id == f"slack_{ts.replace('.', '_')}"


async def test_export_says_what_is_wrong(slack: FakeSlack, adk: AdkServer, prefix: str,
                                         real_redis: aioredis.Redis, tmp_path: Path) -> None:
    env = cli_env(slack, adk, prefix)
    code, out, err = await run_cli("evals", "export", "--out", str(tmp_path), env=env)
    assert (code, out, err) == (
        0, "nothing to export: no rated answers with what a case needs in the last 7d under "
        f"REDIS_KEY_PREFIX={prefix!r} in Redis at {REAL_REDIS_URL}\n", "")
    code, _, err = await run_cli("evals", "export", "--out", str(tmp_path), "--since", "soon",
                                 env=env)
    assert code == 2 and "--since" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, out, err = await run_cli("evals", "export", "--out", str(a_file), env=env)
    assert (code, out, err) == (2, "", f"error: --out {a_file} is not a folder\n")
    # without google-adk, the export says which extra it needs
    shadow = tmp_path / "shadow" / "google" / "adk"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named google.adk')\n")
    code, out, err = await run_cli(
        "evals", "export", "--out", str(tmp_path), env={
            **env, "PYTHONPATH": f"{tmp_path / 'shadow'}:{Path(__file__).parents[2]}"})
    assert (code, out) == (2, "")
    assert err == ("error: the export builds eval sets with ADK's evaluation models: install "
                   "the adk extra (pip install 'adk-slack-bot[adk]', or google-adk)\n")


async def test_a_rebuilt_thread_starts_at_its_last_reset(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer, prefix: str,
    real_redis: aioredis.Redis, tmp_path: Path,
) -> None:
    root, _, _ = await ask(slack, bot, "before the reset")
    before = len(slack.bot_replies("C1", root))
    await say(slack, bot, user="U1", text="reset", thread_ts=root)
    await wait_replies(slack, "C1", root, before + 1, timeout=30)
    _, ts, answer = await ask(slack, bot, "after the reset", root=root)
    await vote(slack, bot, root=root, answer=answer, rating="up", user="U1")
    record = await real_redis.hgetall(Keys(prefix).thread(f"{TEAM}:C1:{root}"))
    assert record["reset_at"]
    async with httpx.AsyncClient(base_url=adk.base_url) as client:
        gone = await client.delete(f"/apps/test_agent/users/{record['adk_user_id']}/sessions/"
                                   f"{record['session_id']}")
    assert gone.status_code == 200
    out_dir = tmp_path / "evals"
    code, out, err = await run_cli("evals", "export", "--out", str(out_dir), "--keep-names",
                                   env=cli_env(slack, adk, prefix))
    assert (code, err) == (0, ""), out
    [case] = exported(out_dir / "slack_feedback_up_from_threads.evalset.json").eval_cases
    assert case.conversation is not None
    assert [text_of(i.user_content) for i in case.conversation] == ["Alice: after the reset"]
    assert case.eval_id == f"C1_{root}_{ts}".replace(".", "_")

"""Token usage: the fields a turn's save writes (bot/usage.py) and the save itself on Redis,
the price table and the cost, the footer (its text, and its place in a Slack answer and in
the terminal), and the pure parts of `python -m bot usage` (rows, table, CSV, arguments).
The commands against a running bot are in tests/integration/test_usage.py."""

from __future__ import annotations

import argparse
import time

import pytest
from pydantic import ValidationError

from bot.cli.sessions import CliError
from bot.cli.usage import (
    add_usage_parser,
    aggregate,
    csv_text,
    default_since,
    read_days,
    render_csv,
    render_report,
    render_thread_tokens,
    since_seconds,
    utc_days,
)
from bot.config import describe_validation_error
from bot.console import ConsoleIO
from bot.metrics import MAX_TOKEN_MODELS, OTHER_MODELS, Metrics
from bot.slack.blocks import MAX_BLOCKS_PER_MESSAGE
from bot.slack.replies import SlackThreadIO
from bot.thread_io import FeedbackRef, Reply
from bot.usage import (
    MAX_NAME_CHARS,
    TurnUsage,
    clean_name,
    cost,
    footer_text,
    format_usd,
    parse_day_field,
    parse_prices,
    prices_of,
    thread_tokens,
    total,
)
from tests.settings import default_settings
from tests.unit.test_store_and_worker import make_store, turn

M = "test-model-1"
ONE_TURN = {(M, "prompt"): 1200, (M, "candidates"): 340, (M, "thoughts"): 25,
            (M, "cached"): 800}
PRICES = parse_prices({M: {"prompt": 1, "candidates": 10, "thoughts": 20, "cached": 0.5}})


# ---- names and fields -----------------------------------------------------------------


def test_names_in_fields_are_bounded_and_cleaned() -> None:
    assert clean_name("gemini-2.5-flash") == "gemini-2.5-flash"
    assert clean_name("a|b\nc\x00d\x7f") == "a b c d"
    assert clean_name(" | \t") == "unknown"
    assert clean_name("") == "unknown"
    assert clean_name("x" * 500) == "x" * MAX_NAME_CHARS


def test_a_turns_fields_count_the_turn_and_each_models_tokens() -> None:
    usage = TurnUsage("T1", "C1", {**ONE_TURN, ("evil|model", "prompt"): 7,
                                   ("evil\nmodel", "prompt"): 3, ("m2", "candidates"): 0,
                                   (M, "bogus"): 9})
    assert usage.fields() == [
        ("", "T1|C1||turns", 1),
        ("tokens|evil model|prompt", "T1|C1|evil model|prompt", 10),
        ("", "T1|C1|evil model|turns", 1),
        (f"tokens|{M}|prompt", f"T1|C1|{M}|prompt", 1200),
        (f"tokens|{M}|cached", f"T1|C1|{M}|cached", 800),
        (f"tokens|{M}|candidates", f"T1|C1|{M}|candidates", 340),
        (f"tokens|{M}|thoughts", f"T1|C1|{M}|thoughts", 25),
        ("", f"T1|C1|{M}|turns", 1),
    ]
    assert TurnUsage("T1", "C1", {}).fields() == [("", "T1|C1||turns", 1)]


def test_fields_are_read_back() -> None:
    assert thread_tokens({"turns": "3", f"tokens|{M}|prompt": "12", "tokens|x|bogus": "1",
                          "tokens|y|cached": "n/a"}) == {(M, "prompt"): 12}
    field = parse_day_field(f"T1|C1|{M}|cached")
    assert field is not None and (field.workspace, field.channel, field.model,
                                  field.kind) == ("T1", "C1", M, "cached")
    assert parse_day_field("T1|C1||turns") is not None
    assert parse_day_field("T1|C1||prompt") is None
    assert parse_day_field("T1|C1|m|bogus") is None
    assert parse_day_field("T1|C1|prompt") is None


# ---- the save -------------------------------------------------------------------------


async def test_the_save_counts_the_turns_tokens_on_its_thread_and_day(any_redis,
                                                                     prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    token, _head = await store.claim(t.key, 5000)
    assert token is not None
    usage = TurnUsage("T1", "C1", ONE_TURN)
    before = time.time()
    await store.save_outbox(t.key, t.ts, [{"text": "one"}], lock_token=token, usage=usage)
    # The same save again (the command repeated on a new connection) counts nothing twice.
    await store.save_outbox(t.key, t.ts, [{"text": "one"}], lock_token=token, usage=usage)
    record = await store.get_thread(t.key)
    assert record is not None and record.turns == 1 and record.tokens == ONE_TURN
    day = time.strftime("%Y-%m-%d", time.gmtime(before))
    name = store.keys.usage(store.keys.shard_of(t.key), day)
    assert name.startswith(store.keys.shard(store.keys.shard_of(t.key)))  # the thread's tag
    assert await any_redis.hgetall(name) == {
        "T1|C1||turns": "1", f"T1|C1|{M}|turns": "1", f"T1|C1|{M}|prompt": "1200",
        f"T1|C1|{M}|cached": "800", f"T1|C1|{M}|candidates": "340",
        f"T1|C1|{M}|thoughts": "25"}
    expires = int(before // 86400) * 86400 + (store.usage_retention_days + 1) * 86400
    assert await any_redis.ttl(name) == pytest.approx(expires - time.time(), abs=5)
    assert await read_days(any_redis, store.keys, [day]) == {
        day: {k: int(v) for k, v in (await any_redis.hgetall(name)).items()}}

    # A turn the agent did not run (usage None) is counted on its thread only.
    t2 = turn("102.0")
    await store.save_outbox(t2.key, t2.ts, [{"text": "reset"}])
    record = await store.get_thread(t.key)
    assert record is not None and record.turns == 2 and record.tokens == ONE_TURN
    assert (await any_redis.hgetall(name))["T1|C1||turns"] == "1"


# ---- prices ---------------------------------------------------------------------------


def test_the_price_table_is_checked_and_completed() -> None:
    assert parse_prices("") == {} and parse_prices(None) == {}
    table = parse_prices('{"m": {"prompt": 0.3, "candidates": 2.5}, "*": {"prompt": 1, '
                         '"candidates": 2, "thoughts": 3, "cached": 0}}')
    assert table == {"m": {"prompt": 0.3, "cached": 0.3, "tool_use": 0.3, "candidates": 2.5,
                           "thoughts": 2.5},
                     "*": {"prompt": 1.0, "cached": 0.0, "tool_use": 1.0, "candidates": 2.0,
                           "thoughts": 3.0}}
    assert parse_prices({"m": {"prompt": 1, "candidates": 2, "tool_use": 0.5}})["m"][
        "tool_use"] == 0.5
    for bad, said in (
        ("[1]", "must be a JSON object of models"),
        ("{", "not valid JSON"),
        ('{"m": 1}', "m: must be an object of prices by kind"),
        ('{"m": {"prompt": 1}}', "m: needs a candidates price"),
        ('{"m": {"candidates": 1}}', "m: needs a prompt price"),
        ('{"m": {"prompt": 1, "candidates": 1, "output": 1}}', "m: unknown kind output"),
        ('{"m": {"prompt": -1, "candidates": 1}}', "m: prompt must be a number"),
        ('{"m": {"prompt": true, "candidates": 1}}', "m: prompt must be a number"),
        ('{"m": {"prompt": "1", "candidates": 1}}', "m: prompt must be a number"),
        ('{"a|b": {"prompt": 1, "candidates": 1}}', "'a|b' is not a model name"),
    ):
        with pytest.raises(ValueError, match=f"^{said}"):
            parse_prices(bad)


def test_a_bad_price_table_stops_the_settings_with_one_clear_line() -> None:
    with pytest.raises(ValidationError) as error:
        default_settings(token_prices='{"m": {"prompt": 1}}')
    assert describe_validation_error(error.value) == [
        "TOKEN_PRICES: m: needs a candidates price"]
    assert default_settings().token_prices == {} and default_settings().usage_footer is False
    assert default_settings().usage_retention_days == 400


def test_models_are_priced_exactly_then_by_the_longest_pattern() -> None:
    table = parse_prices({"gemini-2.5-flash": {"prompt": 1, "candidates": 1},
                          "gemini-2.5-*": {"prompt": 2, "candidates": 2},
                          "gemini-*": {"prompt": 3, "candidates": 3},
                          "*": {"prompt": 4, "candidates": 4}})
    assert prices_of("gemini-2.5-flash", table) == table["gemini-2.5-flash"]
    assert prices_of("gemini-2.5-pro", table) == table["gemini-2.5-*"]
    assert prices_of("gemini-2.0-flash", table) == table["gemini-*"]
    assert prices_of("claude", table) == table["*"]
    assert prices_of("claude", {"gemini-*": table["gemini-*"]}) is None


def test_cached_tokens_are_priced_at_the_cached_rate_and_the_rest_of_the_prompt_not() -> None:
    usd, unpriced = cost(ONE_TURN, PRICES)
    # (1,200 - 800) x 1 + 800 x 0.5 + 340 x 10 + 25 x 20 = 4,700 per 1M tokens
    assert usd == pytest.approx(0.0047) and unpriced == []
    usd, unpriced = cost({**ONE_TURN, ("other", "prompt"): 10**6}, PRICES)
    assert usd == pytest.approx(0.0047) and unpriced == ["other"]
    # More cached than prompt (odd counts) never makes the prompt negative.
    assert cost({(M, "prompt"): 10, (M, "cached"): 50}, PRICES)[0] == pytest.approx(5e-6)


def test_tool_use_prompt_tokens_are_priced_at_the_prompt_rate_unless_named() -> None:
    tokens = {**ONE_TURN, (M, "tool_use"): 100}
    # 4,700 + 100 x 1 (the prompt rate)
    assert cost(tokens, PRICES)[0] == pytest.approx(0.0048)
    own = parse_prices({M: {"prompt": 1, "candidates": 10, "thoughts": 20, "cached": 0.5,
                            "tool_use": 3}})
    assert cost(tokens, own)[0] == pytest.approx(0.0050)
    assert total(tokens.items()) == 1665
    assert footer_text(tokens, {}) == (
        "1,665 tokens: 1,200 in (800 cached), 100 tool results in, 340 out, 25 thinking")
    assert TurnUsage("T1", "C1", {(M, "tool_use"): 7}).fields() == [
        ("", "T1|C1||turns", 1), (f"tokens|{M}|tool_use", f"T1|C1|{M}|tool_use", 7),
        ("", f"T1|C1|{M}|turns", 1)]
    assert thread_tokens({f"tokens|{M}|tool_use": "7"}) == {(M, "tool_use"): 7}


def test_dollars_are_shown_to_a_useful_precision() -> None:
    assert format_usd(1234.567) == "$1,234.57"
    assert format_usd(0.0047) == "$0.0047"
    assert format_usd(0.00004) == "<$0.0001"
    assert format_usd(0) == "$0.0000"


# ---- the footer -----------------------------------------------------------------------


def test_the_footer_names_the_tokens_and_the_cost_when_every_model_has_a_price() -> None:
    assert footer_text(ONE_TURN, {}) == "1,565 tokens: 1,200 in (800 cached), 340 out, 25 thinking"
    assert footer_text(ONE_TURN, PRICES) == (
        "1,565 tokens: 1,200 in (800 cached), 340 out, 25 thinking · est. $0.0047")
    assert footer_text({(M, "prompt"): 10, (M, "candidates"): 5}, {}) == (
        "15 tokens: 10 in, 5 out")
    assert footer_text({**ONE_TURN, ("other", "prompt"): 5}, PRICES) == (
        "1,570 tokens: 1,205 in (800 cached), 340 out, 25 thinking")
    assert footer_text({}, PRICES) == ""


def _slack_io() -> SlackThreadIO:
    return SlackThreadIO.__new__(SlackThreadIO)  # with_feedback/with_footer use no state


def test_the_slack_footer_goes_under_the_answer_above_its_feedback() -> None:
    io = _slack_io()
    replies = [Reply("note"), *io.answer_replies("the answer"), Reply("a notice after")]
    rated = io.with_feedback(replies, FeedbackRef(thread_key="T1:C1:1.0", turn_ts="1.0",
                                                  session_id="s", invocation_id="i"))
    shown = io.with_footer(rated, "12 tokens: 10 in, 2 out & <more>")
    assert [b["type"] for b in shown[1].blocks] == ["markdown", "context", "context_actions"]
    assert shown[1].blocks[1] == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "12 tokens: 10 in, 2 out &amp; &lt;more&gt;"}]}
    assert shown[0] == replies[0] and shown[2] == replies[2]
    # Without feedback, the footer ends the message.
    assert [b["type"] for b in io.with_footer(replies, "x")[1].blocks] == ["markdown",
                                                                          "context"]
    # Only notices: nothing to put it under.
    assert io.with_footer([Reply("note")], "x") == [Reply("note")]


def test_the_slack_footer_never_takes_the_last_block_of_a_full_message() -> None:
    io = _slack_io()
    full = Reply("a", blocks=[{"type": "markdown", "text": "a"}] * MAX_BLOCKS_PER_MESSAGE,
                 answer=True)
    assert io.with_footer([full], "x") == [full]
    almost = Reply("a", blocks=[{"type": "markdown", "text": "a"}] * (MAX_BLOCKS_PER_MESSAGE - 1),
                   answer=True)
    [shown] = io.with_footer([almost], "x")
    assert len(shown.blocks) == MAX_BLOCKS_PER_MESSAGE


def test_the_terminal_footer_is_a_line_under_the_answer() -> None:
    io = ConsoleIO.__new__(ConsoleIO)
    shown = io.with_footer([Reply("the answer", answer=True), Reply("note")], "15 tokens")
    assert shown == [Reply("the answer\n(15 tokens)", answer=True), Reply("note")]


# ---- the report -----------------------------------------------------------------------

DAYS = {
    "2026-05-01": {"T1|C1||turns": 2, f"T1|C1|{M}|turns": 2, f"T1|C1|{M}|prompt": 2400,
                   f"T1|C1|{M}|cached": 1600, f"T1|C1|{M}|candidates": 680,
                   f"T1|C1|{M}|thoughts": 50, "T1|C2||turns": 1, "junk": 5},
    "2026-05-02": {"T2|C9||turns": 3, "T2|C9|other|turns": 1, "T2|C9|other|prompt": 100,
                   "T2|C9|other|candidates": 10},
}


def test_rows_by_each_dimension() -> None:
    rows, whole = aggregate(DAYS, "channel")
    assert [(r.key, r.turns) for r in rows] == [(("T1", "C1"), 2), (("T2", "C9"), 3),
                                                (("T1", "C2"), 1)]
    assert whole.turns == 6 and whole.tokens[M, "prompt"] == 2400
    rows, _ = aggregate(DAYS, "workspace")
    assert [(r.key, r.turns) for r in rows] == [(("T1",), 3), (("T2",), 3)]
    rows, _ = aggregate(DAYS, "day")
    assert [(r.key, r.turns) for r in rows] == [(("2026-05-01",), 3), (("2026-05-02",), 3)]
    rows, whole = aggregate(DAYS, "model")
    assert [(r.key, r.turns) for r in rows] == [((M,), 2), (("other",), 1)]
    assert whole.turns == 6


def test_the_table_and_the_csv() -> None:
    rows, whole = aggregate(DAYS, "model")
    days = ["2026-05-01", "2026-05-02"]
    assert render_report(rows, whole, by="model", days=days, prices=PRICES) == (
        "Token usage by model, 2026-05-01 to 2026-05-02 (UTC)\n\n"
        "MODEL         TURNS  PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL  EST. COST\n"
        "test-model-1      2   2,400   1,600         0         680        50  3,130    $0.0094\n"
        "other             1     100       0         0          10         0    110          -\n"
        "TOTAL             6   2,500   1,600         0         690        50  3,240          -\n\n"
        "PROMPT includes CACHED; TOTAL is PROMPT + TOOL_USE + CANDIDATES + THOUGHTS.\n"
        "A model's TURNS are the turns that used it; the TOTAL row's are every turn.\n"
        "EST. COST: USD from TOKEN_PRICES; cached tokens at the cached rate, the rest of the "
        "prompt at the prompt rate.\n"
        "-: TOKEN_PRICES has no price for other.")
    assert render_csv(rows, by="model", prices=PRICES) == (
        "model,turns,prompt,cached,tool_use,candidates,thoughts,total,cost_usd\n"
        "test-model-1,2,2400,1600,0,680,50,3130,0.009400\n"
        "other,1,100,0,0,10,0,110,\n")
    rows, whole = aggregate({"2026-05-01": {'T1|C"1||turns': 1}}, "channel")
    assert render_csv(rows, by="channel", prices={}) == (
        "workspace,channel,turns,prompt,cached,tool_use,candidates,thoughts,total\n"
        'T1,"C""1",1,0,0,0,0,0,0\n')
    assert render_report([], whole, by="day", days=days, prices={}) == (
        "No token usage recorded from 2026-05-01 to 2026-05-02 (UTC).")
    assert render_report([], whole, by="day", days=days, prices={},
                         source="under REDIS_KEY_PREFIX='x' in Redis at r") == (
        "No token usage recorded from 2026-05-01 to 2026-05-02 (UTC) under "
        "REDIS_KEY_PREFIX='x' in Redis at r.")


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted() -> None:
    assert [csv_text(v) for v in ("=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "\tx", "\rx",
                                  "gemini-2.5-flash", "C1", "")] == [
        "'=HYPERLINK(1)", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx",
        "gemini-2.5-flash", "C1", ""]
    day = {f"T1|=cmd()|{M}|prompt": 5, "T1|=cmd()||turns": 1, f"T1|=cmd()|{M}|turns": 1,
           "T1|C1|@evil|prompt": 3, "T1|C1|@evil|turns": 1, "T1|C1||turns": 1}
    rows, _ = aggregate({"2026-05-01": day}, "channel")
    assert render_csv(rows, by="channel", prices={}).splitlines()[1:] == [
        "T1,'=cmd(),1,5,0,0,0,0,5", "T1,C1,1,3,0,0,0,0,3"]
    rows, _ = aggregate({"2026-05-01": day}, "model")
    assert render_csv(rows, by="model", prices={}).splitlines()[1:] == [
        f"{M},1,5,0,0,0,0,5", "'@evil,1,3,0,0,0,0,3"]


def test_a_threads_tokens() -> None:
    assert render_thread_tokens({}, PRICES) == "  none recorded"
    assert render_thread_tokens({**ONE_TURN, ("b", "prompt"): 5}, PRICES) == (
        "  MODEL         PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL  EST. COST\n"
        "  b                  5       0         0           0         0      5          -\n"
        "  test-model-1   1,200     800         0         340        25  1,565    $0.0047\n"
        "  TOTAL          1,205     800         0         340        25  1,570          -\n"
        "  -: TOKEN_PRICES has no price for b.")


def test_since_is_a_duration_within_the_retention() -> None:
    assert since_seconds("30d", 400) == 30 * 86400
    with pytest.raises(CliError) as error:
        since_seconds("401d", 400)
    assert error.value.code == 2 and "USAGE_RETENTION_DAYS=400" in str(error.value)
    with pytest.raises(CliError) as error:
        since_seconds("soon", 400)
    assert error.value.code == 2 and str(error.value).startswith("--since: 'soon' is not")
    noon = 1_777_636_800.0  # 2026-05-01 12:00 UTC
    assert utc_days(noon, 86400) == ["2026-04-30", "2026-05-01"]
    assert utc_days(noon, 3600) == ["2026-05-01"]
    # No --since: 30 days, or the retention when it is shorter.
    assert since_seconds(None, 400) == 30 * 86400
    assert since_seconds(None, 7) == 7 * 86400
    assert default_since(7) == "7d" and default_since(30) == "30d"


def test_bad_arguments_exit_2() -> None:
    parser = argparse.ArgumentParser(prog="bot")
    add_usage_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["usage"])
    assert (args.by, args.since, args.csv) == ("channel", None, False)
    for bad in (["usage", "--by", "user"], ["usage", "--since", "0d"],
                ["usage", "--since", "x"]):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(bad)
        assert exited.value.code == 2


def test_the_model_label_of_the_token_metric_is_cleaned_and_bounded() -> None:
    metrics = Metrics()
    metrics.count_tokens("evil|model\n", "prompt", 5)
    for n in range(MAX_TOKEN_MODELS + 5):
        metrics.count_tokens(f"m{n}", "prompt", 1)
    metrics.count_tokens("m0", "prompt", 1)  # a model it took keeps its label
    text = metrics.render().decode()
    assert 'slackbot_tokens_total{kind="prompt",model="evil model"} 5.0' in text
    assert 'slackbot_tokens_total{kind="prompt",model="m0"} 2.0' in text
    assert f'slackbot_tokens_total{{kind="prompt",model="{OTHER_MODELS}"}} 6.0' in text
    models = {line.split('model="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("slackbot_tokens_total{")}
    assert len(models) == MAX_TOKEN_MODELS + 1

"""Tests of the bundled demo agent ``examples/agents/finops_cost_data_analyst``.

The analysis module is pure; the agent test runs it through ADK's in-process
``InMemoryRunner`` (no server, no network, no LLM).
"""

from __future__ import annotations

import csv
import importlib
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

AGENTS_DIR = Path(__file__).resolve().parents[2] / "examples" / "agents"
CSV_PATH = AGENTS_DIR / "finops_cost_data_analyst" / "data" / "cloud_costs.csv"
if str(AGENTS_DIR) not in sys.path:
    sys.path.insert(0, str(AGENTS_DIR))

analysis = importlib.import_module("finops_cost_data_analyst.analysis")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _csv_records() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _csv_sum(**where: str) -> float:
    """Sum of cost_usd over CSV rows matching ``where`` (``month`` matches the date prefix)."""
    total = 0.0
    for rec in _csv_records():
        if all(
            rec["date"].startswith(v) if k == "month" else rec[k] == v for k, v in where.items()
        ):
            total += float(rec["cost_usd"])
    return round(total, 2)


def _money(text: str) -> float:
    return float(text.replace("*", "").replace("$", "").replace(",", "").replace("+", ""))


def _table_rows(markdown: str) -> list[list[str]]:
    """Body rows of the first markdown table (header and separator dropped)."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, markdown
    assert re.fullmatch(r"\|( -{3,}:? \|)+", lines[1]), lines[1]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def data() -> Any:
    return analysis.load_cost_data()


def ask(data: Any, *messages: str) -> Any:
    """Ask ``messages[-1]`` after the earlier messages; returns the QueryResult."""
    return analysis.answer_conversation(list(messages[:-1]), messages[-1], data)


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


def test_dataset_shape(data: Any) -> None:
    records = _csv_records()
    assert 300 <= len(records) <= 600
    assert CSV_PATH.stat().st_size < 60_000
    assert list(records[0]) == ["date", "provider", "service", "project", "team", "env", "cost_usd"]
    assert data.months == ("2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10")
    assert set(data.values["provider"]) == {"GCP", "AWS"}
    assert set(data.values["team"]) == {"platform", "data", "web", "ml"}
    assert set(data.values["env"]) == {"prod", "staging", "dev"}
    assert {"BigQuery", "Compute Engine", "GKE", "EC2", "S3", "RDS", "Lambda"} <= set(
        data.values["service"]
    )
    assert all(re.fullmatch(r"\d+\.\d{2}", r["cost_usd"]) for r in records)


def test_generator_is_deterministic() -> None:
    gen = importlib.import_module("finops_cost_data_analyst.data.generate")
    rows = gen.generate()
    assert rows == _csv_records()


# --------------------------------------------------------------------------------------------
# totals and tables
# --------------------------------------------------------------------------------------------


def test_total_cost_matches_csv(data: Any) -> None:
    assert analysis.total_cost(data.rows) == _csv_sum()
    october = analysis.select_rows(data, ["2026-10"])
    assert analysis.total_cost(october) == _csv_sum(month="2026-10")
    bq = analysis.select_rows(data, ["2026-10"], {"service": ["BigQuery"]})
    assert analysis.total_cost(bq) == _csv_sum(month="2026-10", service="BigQuery")


def test_group_costs_sorted_and_sum_to_total(data: Any) -> None:
    for dim in analysis.DIMENSIONS:
        groups = analysis.group_costs(data.rows, dim)
        costs = [c for _, c in groups]
        assert costs == sorted(costs, reverse=True)
        assert round(sum(costs), 2) == pytest.approx(_csv_sum(), abs=0.05)
        assert {g for g, _ in groups} == set(data.values[dim])


def test_total_answer_last_month(data: Any) -> None:
    result = ask(data, "What was our total cloud spend last month?")
    assert result.query.intent == "total"
    assert result.query.months == ("2026-10",)
    expected = _csv_sum(month="2026-10")
    assert result.summary["total_usd"] == expected
    assert analysis.usd(expected) in result.markdown.splitlines()[0]
    rows = _table_rows(result.markdown)
    assert _money(rows[-1][1]) == expected  # **Total** row
    assert "_Takeaway:" in result.markdown


def test_named_service_last_month_with_speaker_prefix(data: Any) -> None:
    result = ask(data, "Alice: what did we spend on BigQuery last month?")
    assert result.query.intent == "total"
    assert result.query.filter_dict() == {"service": ("BigQuery",)}
    assert result.query.months == ("2026-10",)
    assert result.summary["total_usd"] == _csv_sum(month="2026-10", service="BigQuery")
    assert "BigQuery" in result.markdown.splitlines()[0]


def test_breakdown_by_team_table_sorted_with_totals_and_share(data: Any) -> None:
    result = ask(data, "Show spend by team for October")
    assert (result.query.intent, result.query.dimension) == ("breakdown", "team")
    rows = _table_rows(result.markdown)
    body, total_row = rows[:-1], rows[-1]
    costs = [_money(r[1]) for r in body]
    assert costs == sorted(costs, reverse=True)
    assert total_row[0] == "**Total**"
    assert _money(total_row[1]) == _csv_sum(month="2026-10")
    by_team: dict[str, float] = defaultdict(float)
    for rec in _csv_records():
        if rec["date"].startswith("2026-10"):
            by_team[rec["team"]] += float(rec["cost_usd"])
    assert body[0][0] == max(by_team, key=lambda t: by_team[t])
    shares = [float(r[2].rstrip("%")) for r in body]
    assert sum(shares) == pytest.approx(100.0, abs=0.3)


@pytest.mark.parametrize(
    ("question", "dimension"),
    [
        ("costs by service", "service"),
        ("break down spend per project", "project"),
        ("spend by account", "project"),
        ("spend by cloud provider", "provider"),
        ("cost by environment", "env"),
        ("which team spends the most?", "team"),
    ],
)
def test_breakdown_dimensions(data: Any, question: str, dimension: str) -> None:
    query = analysis.interpret_conversation([], question, data)
    assert (query.intent, query.dimension) == ("breakdown", dimension)


def test_top_n_services(data: Any) -> None:
    result = ask(data, "top 3 services last month")
    assert (result.query.intent, result.query.dimension, result.query.top_n) == (
        "breakdown",
        "service",
        3,
    )
    rows = _table_rows(result.markdown)
    assert len(rows) == 3 + 2  # top 3, "All others", Total
    assert rows[0][0] == "BigQuery"
    assert _money(rows[0][1]) == _csv_sum(month="2026-10", service="BigQuery")


def test_trend_month_over_month(data: Any) -> None:
    result = ask(data, "Show the month-over-month trend for AWS")
    assert result.query.intent == "trend"
    assert result.query.filter_dict() == {"provider": ("AWS",)}
    rows = _table_rows(result.markdown)[:-1]
    assert [r[0] for r in rows] == [analysis.month_label(m) for m in data.months]
    for row, month in zip(rows, data.months, strict=True):
        assert _money(row[1]) == _csv_sum(month=month, provider="AWS")
    assert rows[0][3] == "—"
    assert re.fullmatch(r"[+-]\d+\.\d%", rows[1][3])


def test_anomalies_find_the_bigquery_spike(data: Any) -> None:
    result = ask(data, "Any cost anomalies last month?")
    assert result.query.intent == "anomalies"
    rows = _table_rows(result.markdown)
    assert rows[0][0] == "BigQuery"
    assert "acme-data-prod" in rows[0][1] and "⚠️" in rows[0][1]
    deltas = [_money(r[4]) for r in rows]
    assert deltas == sorted(deltas, reverse=True)
    assert result.summary["anomalies"] >= 1


def test_help_when_not_understood(data: Any) -> None:
    for text in ("what is the weather like?", "help", ""):
        result = ask(data, text)
        assert result.query.intent == "help"
        assert "What did we spend on BigQuery last month?" in result.markdown


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("October", ("2026-10",)),
        ("in Sept", ("2026-09",)),
        ("for 2026-07", ("2026-07",)),
        ("last month", ("2026-10",)),
        ("the month before last", ("2026-09",)),
        ("last 3 months", ("2026-08", "2026-09", "2026-10")),
        ("Q3", ("2026-07", "2026-08", "2026-09")),
        ("from June to August", ("2026-06", "2026-07", "2026-08")),
        ("since August", ("2026-08", "2026-09", "2026-10")),
        ("July and September", ("2026-07", "2026-09")),
        ("all time", ()),
        ("how much did we spend", None),
        ("what may change", None),  # "may" the verb
        ("in May", ("2026-05",)),
    ],
)
def test_parse_period(data: Any, text: str, months: tuple[str, ...] | None) -> None:
    assert analysis.parse_period(text, data) == months


def test_parse_period_relative_to_anchor(data: Any) -> None:
    assert analysis.parse_period("and the month before?", data, ("2026-09",)) == ("2026-08",)
    assert analysis.parse_period("previous month", data, ("2026-10",)) == ("2026-09",)
    assert analysis.parse_period("the month after", data, ("2026-06",)) == ("2026-07",)


def test_month_helpers(data: Any) -> None:
    assert analysis.shift_month("2026-01", -1) == "2025-12"
    assert analysis.shift_month("2026-12", 1) == "2027-01"
    assert analysis.period_label(["2026-08", "2026-09", "2026-10"], data) == "August–October 2026"
    assert analysis.period_label([], data) == "May–October 2026"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice: what did we spend on BigQuery?", "what did we spend on BigQuery?"),
        ("Mary Jane Watson: top services", "top services"),
        ("<@U123ABC> spend by team", "spend by team"),
        ("what did we spend?", "what did we spend?"),
    ],
)
def test_strip_speaker(text: str, expected: str) -> None:
    assert analysis.strip_speaker(text) == expected


def test_filters_do_not_confuse_projects_envs_and_teams(data: Any) -> None:
    query = analysis.interpret_conversation([], "spend for acme-data-prod in October", data)
    assert query.filter_dict() == {"project": ("acme-data-prod",)}
    query = analysis.interpret_conversation([], "what does the data team spend on prod?", data)
    assert query.filter_dict() == {"team": ("data",), "env": ("prod",)}
    query = analysis.interpret_conversation([], "Cloud SQL spend by provider", data)
    assert query.dimension == "provider"
    assert query.filter_dict() == {"service": ("Cloud SQL",)}


# --------------------------------------------------------------------------------------------
# follow-ups
# --------------------------------------------------------------------------------------------


def test_follow_up_month_before_keeps_subject(data: Any) -> None:
    first = "Alice: what did we spend on BigQuery last month?"
    result = ask(data, first, "Bob: and the month before?")
    assert result.query.intent == "total"
    assert result.query.filter_dict() == {"service": ("BigQuery",)}
    assert result.query.months == ("2026-09",)
    assert result.summary["total_usd"] == _csv_sum(month="2026-09", service="BigQuery")


def test_follow_up_chain_break_down_by_team(data: Any) -> None:
    history = ["What did we spend on BigQuery last month?", "and the month before?"]
    result = ask(data, *history, "break that down by team")
    q = result.query
    assert (q.intent, q.dimension, q.months) == ("breakdown", "team", ("2026-09",))
    assert q.filter_dict() == {"service": ("BigQuery",)}
    rows = _table_rows(result.markdown)
    assert rows[0][0] == "data"
    assert _money(rows[-1][1]) == _csv_sum(month="2026-09", service="BigQuery")


def test_follow_up_what_about_other_service(data: Any) -> None:
    q = analysis.interpret_conversation(
        ["What did we spend on BigQuery in August?"], "what about EC2?", data
    )
    assert (q.intent, q.months, q.filter_dict()) == ("total", ("2026-08",), {"service": ("EC2",)})


def test_new_question_does_not_inherit_filters(data: Any) -> None:
    q = analysis.interpret_conversation(
        ["What did we spend on BigQuery last month?"], "Show spend by team for July", data
    )
    assert (q.intent, q.dimension, q.months, q.filters) == ("breakdown", "team", ("2026-07",), ())


def test_help_and_thanks_do_not_break_the_chain(data: Any) -> None:
    q = analysis.interpret_conversation(
        ["spend on GKE in September", "thanks!", "help"], "and the month before?", data
    )
    assert (q.intent, q.months, q.filter_dict()) == ("total", ("2026-08",), {"service": ("GKE",)})


def test_month_without_data(data: Any) -> None:
    result = ask(data, "total spend in November 2026")
    assert result.summary["rows"] == 0
    assert "May–October 2026" in result.markdown


# --------------------------------------------------------------------------------------------
# the agent, through ADK's in-process runner
# --------------------------------------------------------------------------------------------


def test_mode_selection() -> None:
    agent_mod = importlib.import_module("finops_cost_data_analyst.agent")
    assert agent_mod.select_mode({}.items()) == "offline"
    assert agent_mod.select_mode({"GOOGLE_API_KEY": "k"}.items()) == "llm"
    env = {"GOOGLE_API_KEY": "k", "DEMO_AGENT_MODE": "offline"}
    assert agent_mod.select_mode(env.items()) == "offline"
    llm = agent_mod.create_llm_agent("gemini-test")  # construction needs no network
    assert llm.name == "finops_cost_data_analyst"
    assert llm.model == "gemini-test"
    assert len(llm.tools) >= 5


async def test_agent_through_in_memory_runner() -> None:
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    agent_mod = importlib.import_module("finops_cost_data_analyst.agent")
    app = "finops_cost_data_analyst"
    runner = InMemoryRunner(agent=agent_mod.create_offline_agent(), app_name=app)
    session = await runner.session_service.create_session(app_name=app, user_id="U1")

    async def turn(text: str) -> list[Any]:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        return [
            ev
            async for ev in runner.run_async(
                user_id="U1", session_id=session.id, new_message=message
            )
        ]

    events = await turn("Alice: what are our top 5 services last month?")
    calls = [fc for ev in events for fc in ev.get_function_calls()]
    responses = [fr for ev in events for fr in ev.get_function_responses()]
    assert [c.name for c in calls] == ["query_cost_data"]
    assert calls[0].args["intent"] == "breakdown"
    assert [r.name for r in responses] == ["query_cost_data"]
    assert responses[0].id == calls[0].id
    assert responses[0].response["top_service"] == "BigQuery"

    final = events[-1]
    assert final.is_final_response()
    text = "".join(p.text or "" for p in final.content.parts)
    rows = _table_rows(text)
    assert rows[0][0] == "BigQuery"
    assert _money(rows[0][1]) == _csv_sum(month="2026-10", service="BigQuery")

    # A follow-up in the same session uses the earlier user message.
    events = await turn("Bob: and the month before?")
    calls = [fc for ev in events for fc in ev.get_function_calls()]
    assert calls[0].args["months"] == ["2026-09"]
    assert calls[0].args["top_n"] == 5
    text = "".join(p.text or "" for p in events[-1].content.parts)
    assert "September 2026" in text
    services = {
        r["service"]: _csv_sum(month="2026-09", service=r["service"]) for r in _csv_records()
    }
    assert _table_rows(text)[0][0] == max(services, key=lambda s: services[s])

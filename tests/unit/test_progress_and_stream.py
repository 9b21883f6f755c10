from __future__ import annotations

import pytest

from bot.progress import handoff_status, tool_status
from bot.slack.stream import displayable, stable_prefix
from bot.thread_io import control_command


@pytest.mark.parametrize(("name", "status"), [
    ("query_cost_data", "is querying cost data…"),
    ("get_monthly_trend", "is getting monthly trend…"),
    ("find_cost_anomalies", "is finding cost anomalies…"),
    ("describe_cost_data", "is describing cost data…"),
    ("weird-tool", "is using weird tool…"),
    ("query", "is using query…"),
    ("", "is using a tool…"),
])
def test_tool_status_reads_like_a_sentence(name: str, status: str) -> None:
    assert tool_status(name) == status


def test_tool_status_overrides_and_handoffs() -> None:
    assert tool_status("make_chart", {"make_chart": "is drawing…"}) == "is drawing…"
    assert handoff_status("billing_agent") == "is asking billing agent…"


@pytest.mark.parametrize(("text", "command"), [
    ("reset", "reset"), ("Reset!", "reset"), ("  new   conversation ", "reset"),
    ("start over.", "reset"), ("stop", "stop"), ("Cancel", "stop"),
    ("stop the GKE spend", None), ("please reset the budget", None), ("", None),
])
def test_control_commands_are_whole_messages(text: str, command: str | None) -> None:
    assert control_command(text) == command


def test_stable_prefix_never_shows_half_lines_or_growing_tables() -> None:
    assert stable_prefix("partial line") == 0
    assert stable_prefix("line one\npartial") == len("line one\n")
    text = "Intro\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert stable_prefix(text) == len("Intro\n")  # the table may still grow
    done = text + "After the table\n"
    assert stable_prefix(done) == len(done)


def test_displayable_turns_complete_tables_into_code() -> None:
    shown = displayable("Intro\n| a | b |\n|---|---:|\n| x | 2 |\nAfter\n")
    assert shown.startswith("Intro\n```")
    assert shown.index("```") < shown.index("| a") < shown.rindex("```") < shown.index("After")
    fenced = "```\n| not | a table |\n```\n"
    assert displayable(fenced) == fenced

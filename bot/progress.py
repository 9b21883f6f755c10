"""What the user sees while the agent works: a status line per tool call or hand-off."""

from __future__ import annotations

from collections.abc import Mapping

_GERUNDS = {
    "get": "getting", "run": "running", "set": "setting", "put": "putting",
    "list": "listing", "query": "querying", "search": "searching", "find": "finding",
    "fetch": "fetching", "load": "loading", "read": "reading", "compute": "computing",
    "calculate": "calculating", "analyze": "analyzing", "analyse": "analysing",
    "describe": "describing", "lookup": "looking up", "check": "checking",
    "create": "creating", "make": "making", "build": "building", "summarize": "summarizing",
    "plot": "plotting", "chart": "charting", "generate": "generating", "write": "writing",
    "save": "saving", "compare": "comparing", "estimate": "estimating", "forecast": "forecasting",
}

# The status of a turn before a tool call names one, and the default of WORKING_STATUS
# (the Slack side shows that setting in its place).
WORKING = "is thinking…"


def tool_status(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """`query_cost_data` → "is querying cost data…"; an override wins."""
    if overrides and name in overrides:
        return overrides[name]
    words = [w for w in name.replace("-", "_").split("_") if w]
    if not words:
        return "is using a tool…"
    verb = words[0].lower()
    if verb in _GERUNDS and len(words) > 1:
        return f"is {_GERUNDS[verb]} {' '.join(w.lower() for w in words[1:])}…"
    return f"is using {' '.join(words)}…"


def handoff_status(agent: str) -> str:
    return f"is asking {agent.replace('_', ' ')}…"

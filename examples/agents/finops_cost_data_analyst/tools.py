"""Function tools for the optional LLM mode (plain functions; ADK builds the declarations).

Each tool answers from the same pure code as the offline agent and returns a dict with a ready
GitHub-markdown ``markdown`` answer plus a small ``summary``, or an ``error`` with hints. Filter
arguments accept comma-separated values ("BigQuery, GKE"); an empty string means "no filter".
"""

from __future__ import annotations

from typing import Any

from .analysis import (
    DIMENSIONS,
    ENV_ALIASES,
    PROVIDER_ALIASES,
    SERVICE_ALIASES,
    CostData,
    CostQuery,
    interpret_conversation,
    load_cost_data,
    make_filters,
    month_label,
    parse_period,
    period_label,
    run_query,
)

_DIMENSION_SYNONYMS = {
    "account": "project",
    "cloud": "provider",
    "environment": "env",
    "services": "service",
    "teams": "team",
    "projects": "project",
    "providers": "provider",
}


def _aliases(dimension: str) -> dict[str, tuple[str, ...]]:
    return {"service": SERVICE_ALIASES, "provider": PROVIDER_ALIASES, "env": ENV_ALIASES}.get(
        dimension, {}
    )


def _resolve_value(dimension: str, raw: str, data: CostData) -> str | None:
    wanted = raw.strip().lower()
    for value in data.values[dimension]:
        if value.lower() == wanted or wanted in _aliases(dimension).get(value, ()):
            return value
    if dimension == "team" and wanted.endswith(" team"):
        return _resolve_value(dimension, wanted[: -len(" team")], data)
    return None


def _build_query(
    intent: str,
    data: CostData,
    *,
    period: str = "",
    dimension: str | None = None,
    top_n: int | None = None,
    **filter_args: str,
) -> CostQuery | dict[str, Any]:
    filters: dict[str, list[str]] = {}
    for dim, raw in filter_args.items():
        for item in (raw or "").split(","):
            if not item.strip():
                continue
            value = _resolve_value(dim, item, data)
            if value is None:
                return {
                    "error": f"unknown {dim} {item.strip()!r}",
                    "known_values": list(data.values[dim]),
                }
            filters.setdefault(dim, []).append(value)
    months: tuple[str, ...] = ()
    if period.strip():
        parsed = parse_period(period, data)
        if parsed is None:
            return {
                "error": f"could not understand period {period!r}",
                "hint": "use YYYY-MM, a month name, 'last month', 'last 3 months', 'Q3' or ''",
                "months_available": list(data.months),
            }
        months = parsed
    if dimension is not None:
        dimension = _DIMENSION_SYNONYMS.get(dimension.strip().lower(), dimension.strip().lower())
        if dimension not in DIMENSIONS:
            return {"error": f"unknown dimension {dimension!r}", "dimensions": list(DIMENSIONS)}
        if len(filters.get(dimension, ())) <= 1:
            filters.pop(dimension, None)
    return CostQuery(
        intent=intent,
        dimension=dimension,
        months=tuple(sorted(months)),
        filters=make_filters(filters),
        top_n=top_n or None,
    )


def _run(intent: str, **kwargs: Any) -> dict[str, Any]:
    data = load_cost_data()
    query = _build_query(intent, data, **kwargs)
    if isinstance(query, dict):
        return query
    result = run_query(query, data)
    return {"query": query.to_args(), "summary": result.summary, "markdown": result.markdown}


def describe_cost_data() -> dict[str, Any]:
    """Describes the cloud cost dataset: months covered, the latest month ("last month"), and
    the known values of each dimension (service, team, project, provider, env)."""
    data = load_cost_data()
    return {
        "months": list(data.months),
        "period": period_label((), data),
        "latest_month": month_label(data.latest_month),
        "rows": len(data.rows),
        "values": {d: list(v) for d, v in data.values.items()},
    }


def get_total_spend(
    period: str = "",
    service: str = "",
    team: str = "",
    project: str = "",
    provider: str = "",
    env: str = "",
) -> dict[str, Any]:
    """Total cloud spend in USD, optionally filtered, with a short table of its largest parts.

    Args:
      period: "" for all months, or e.g. "2026-10", "October", "last month", "last 3 months", "Q3".
      service: service name(s), comma-separated, e.g. "BigQuery" or "EC2, S3".
      team: team name(s): platform, data, web, ml.
      project: GCP project / AWS account id(s).
      provider: GCP or AWS.
      env: prod, staging or dev.
    """
    return _run(
        "total", period=period, service=service, team=team, project=project,
        provider=provider, env=env,
    )  # fmt: skip


def get_spend_breakdown(
    dimension: str,
    period: str = "",
    top_n: int = 0,
    service: str = "",
    team: str = "",
    project: str = "",
    provider: str = "",
    env: str = "",
) -> dict[str, Any]:
    """Spend grouped by one dimension, sorted largest first, with each group's share.

    Args:
      dimension: one of service, team, project, provider, env.
      period: "" for all months, or e.g. "2026-10", "October", "last month", "Q3".
      top_n: show only the N largest groups (0 = all).
      service: optional service filter(s), comma-separated.
      team: optional team filter(s).
      project: optional project / account filter(s).
      provider: optional provider filter (GCP or AWS).
      env: optional environment filter (prod, staging, dev).
    """
    return _run(
        "breakdown", dimension=dimension, period=period, top_n=top_n, service=service,
        team=team, project=project, provider=provider, env=env,
    )  # fmt: skip


def get_monthly_trend(
    period: str = "",
    service: str = "",
    team: str = "",
    project: str = "",
    provider: str = "",
    env: str = "",
) -> dict[str, Any]:
    """Month-over-month spend (cost and change per month), optionally filtered.

    Args:
      period: "" for all months, or a range such as "last 3 months", "Q3", "July to October".
      service: optional service filter(s), comma-separated.
      team: optional team filter(s).
      project: optional project / account filter(s).
      provider: optional provider filter (GCP or AWS).
      env: optional environment filter (prod, staging, dev).
    """
    return _run(
        "trend", period=period, service=service, team=team, project=project,
        provider=provider, env=env,
    )  # fmt: skip


def find_cost_anomalies(
    period: str = "",
    top_n: int = 5,
    service: str = "",
    team: str = "",
    project: str = "",
    provider: str = "",
    env: str = "",
) -> dict[str, Any]:
    """Biggest cost increases of a month versus the month before, per service and project;
    increases of at least 20% and $500 are flagged as anomalies.

    Args:
      period: the month to examine ("" = the latest month), e.g. "October" or "2026-09".
      top_n: how many increases to list.
      service: optional service filter(s), comma-separated.
      team: optional team filter(s).
      project: optional project / account filter(s).
      provider: optional provider filter (GCP or AWS).
      env: optional environment filter (prod, staging, dev).
    """
    return _run(
        "anomalies", period=period, top_n=top_n, service=service, team=team,
        project=project, provider=provider, env=env,
    )  # fmt: skip


def query_cost_data(question: str) -> dict[str, Any]:
    """Answers a plain-English cost question with the built-in parser (fallback when the other
    tools do not fit), e.g. "top 5 services last month"."""
    data = load_cost_data()
    result = run_query(interpret_conversation([], question, data), data)
    return {
        "query": result.query.to_args(),
        "summary": result.summary,
        "markdown": result.markdown,
    }


LLM_TOOLS = [
    describe_cost_data,
    get_total_spend,
    get_spend_breakdown,
    get_monthly_trend,
    find_cost_anomalies,
    query_cost_data,
]

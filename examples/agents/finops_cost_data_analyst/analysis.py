"""Pure FinOps query logic for the demo agent: load the CSV, parse questions, answer them.

Nothing here imports ADK or touches the network, so it is cheap to unit-test. The agent in
``agent.py`` only wraps :func:`answer_conversation` (offline mode) or the ``tool_*`` helpers
(LLM mode).

Vocabulary:

* a *month* is a ``"YYYY-MM"`` string;
* a *dimension* is one of :data:`DIMENSIONS` (the CSV's categorical columns);
* a :class:`CostQuery` is a parsed question; ``months=()`` means "every month in the data".
"""

from __future__ import annotations

import calendar
import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "cloud_costs.csv"

DIMENSIONS: tuple[str, ...] = ("service", "team", "project", "provider", "env")
DIMENSION_TITLES = {
    "service": "Service",
    "team": "Team",
    "project": "Project / account",
    "provider": "Provider",
    "env": "Environment",
}
INTENTS: tuple[str, ...] = ("total", "breakdown", "trend", "anomalies", "help", "thanks")

DEFAULT_TOP_N = 5
# An increase is flagged as an anomaly when it is at least this large, relatively and absolutely.
ANOMALY_MIN_PCT = 20.0
ANOMALY_MIN_USD = 500.0


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    date: str
    provider: str
    service: str
    project: str
    team: str
    env: str
    cost_usd: float

    @property
    def month(self) -> str:
        return self.date[:7]

    def value(self, dimension: str) -> str:
        return str(getattr(self, dimension))


@dataclass(frozen=True)
class CostData:
    rows: tuple[CostRow, ...]
    months: tuple[str, ...]  # sorted, distinct
    values: dict[str, tuple[str, ...]]  # dimension -> sorted distinct values

    @property
    def latest_month(self) -> str:
        return self.months[-1]


def parse_rows(lines: Iterable[str]) -> CostData:
    """Build :class:`CostData` from CSV text lines (header included)."""
    rows = tuple(
        CostRow(
            date=rec["date"].strip(),
            provider=rec["provider"].strip(),
            service=rec["service"].strip(),
            project=rec["project"].strip(),
            team=rec["team"].strip(),
            env=rec["env"].strip(),
            cost_usd=float(rec["cost_usd"]),
        )
        for rec in csv.DictReader(lines)
    )
    if not rows:
        raise ValueError("cost data is empty")
    months = tuple(sorted({r.month for r in rows}))
    values = {d: tuple(sorted({r.value(d) for r in rows})) for d in DIMENSIONS}
    return CostData(rows=rows, months=months, values=values)


@lru_cache(maxsize=4)
def load_cost_data(path: Path = DATA_FILE) -> CostData:
    with path.open(newline="", encoding="utf-8") as fh:
        return parse_rows(fh)


# --------------------------------------------------------------------------------------------
# Months
# --------------------------------------------------------------------------------------------

_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTH_ABBR = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_MONTH_ABBR["sept"] = 9


def shift_month(month: str, delta: int) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    index = year * 12 + (mon - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_label(month: str, *, short: bool = False) -> str:
    names = calendar.month_abbr if short else calendar.month_name
    return f"{names[int(month[5:7])]} {month[:4]}"


def period_label(months: Sequence[str], data: CostData) -> str:
    """Human label: ``October 2026``, ``May–October 2026``, ``July, September 2026``."""
    ms = sorted(months) if months else list(data.months)
    if len(ms) == 1:
        return month_label(ms[0])
    consecutive = all(shift_month(a, 1) == b for a, b in pairwise(ms))
    first, last = ms[0], ms[-1]
    if consecutive:
        if first[:4] == last[:4]:
            return f"{calendar.month_name[int(first[5:7])]}–{month_label(last)}"
        return f"{month_label(first)}–{month_label(last)}"
    if all(m[:4] == first[:4] for m in ms):
        names = ", ".join(calendar.month_name[int(m[5:7])] for m in ms)
        return f"{names} {first[:4]}"
    return ", ".join(month_label(m) for m in ms)


def _resolve_month_number(mon: int, year: int | None, data: CostData) -> str:
    if year is not None:
        return f"{year:04d}-{mon:02d}"
    candidates = [m for m in data.months if int(m[5:7]) == mon]
    if candidates:
        return candidates[-1]
    # Not in the data: pick the most recent such month not after the data's end.
    latest_year = int(data.latest_month[:4])
    year_guess = latest_year if mon <= int(data.latest_month[5:7]) else latest_year - 1
    return f"{year_guess:04d}-{mon:02d}"


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "twelve": 12,
}  # fmt: skip


def _to_int(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return _NUMBER_WORDS.get(token)


_ABS_MONTH_RE = re.compile(
    r"\b(?P<iso>20\d\d-(?:0[1-9]|1[0-2]))\b"
    r"|\b(?P<name>"
    + "|".join(sorted(list(_MONTH_NAMES) + list(_MONTH_ABBR), key=len, reverse=True))
    + r")\.?(?:\s+(?P<year>20\d\d))?\b",
    re.IGNORECASE,
)
_BEFORE_RE = re.compile(
    r"\b(?:(?:the\s+)?(?:month|one)\s+before(?!\s+last)|previous\s+month|prior\s+month"
    r"|preceding\s+month|(?:a\s+)?month\s+earlier|before\s+that)\b"
)
_AFTER_RE = re.compile(
    r"\b(?:(?:the\s+)?month\s+after|following\s+month|next\s+month|after\s+that)\b"
)


def parse_period(
    text: str, data: CostData, anchor: Sequence[str] | None = None
) -> tuple[str, ...] | None:
    """Find the months a question is about.

    Returns ``None`` when the text names no period, ``()`` for an explicit "all time", else the
    sorted months. ``anchor`` is the previous question's period, used by relative follow-ups such
    as "the month before". "Last month" means the latest month in the data.
    """
    low = text.lower()
    latest = data.latest_month
    anchor_months = tuple(anchor) if anchor else (latest,)

    if re.search(r"\bmonth\s+before\s+last\b", low):
        return (shift_month(latest, -1),)
    if _BEFORE_RE.search(low):
        n = len(anchor_months)
        return tuple(shift_month(m, -n) for m in anchor_months)
    if _AFTER_RE.search(low):
        n = len(anchor_months)
        return tuple(shift_month(m, n) for m in anchor_months)
    m = re.search(r"\b(?:last|past|previous|recent)\s+(\d+|[a-z]+)\s+months\b", low)
    if m and (n := _to_int(m.group(1))):
        return tuple(shift_month(latest, -k) for k in range(n - 1, -1, -1))
    if re.search(r"\b(?:last|this|latest|current|most\s+recent|recent)\s+month\b", low):
        return (latest,)
    if re.search(
        r"\b(?:all[\s-]time|overall|all\s+months|in\s+total|whole\s+period|so\s+far)\b", low
    ):
        return ()
    q = re.search(r"\bq([1-4])(?:\s*(20\d\d))?\b", low)
    if q or re.search(r"\b(?:last|previous)\s+quarter\b", low):
        if q:
            quarter = int(q.group(1))
            year = int(q.group(2)) if q.group(2) else None
        else:  # the latest quarter that is complete in the data
            latest_mon = int(latest[5:7])
            quarter = (latest_mon - 1) // 3 + (1 if latest_mon % 3 == 0 else 0)
            year = int(latest[:4])
            if quarter == 0:
                quarter, year = 4, year - 1
        first = _resolve_month_number(quarter * 3 - 2, year, data)
        return tuple(shift_month(first, k) for k in range(3))

    found: list[str] = []
    for match in _ABS_MONTH_RE.finditer(text):
        if match.group("iso"):
            found.append(match.group("iso"))
            continue
        name = match.group("name")
        word = name.lower()
        year = int(match.group("year")) if match.group("year") else None
        if word == "may" and name != "May" and year is None:
            continue  # "may" the verb, not the month
        if word in {"mar", "jan", "jun", "dec", "sep", "oct", "nov", "aug", "apr", "feb", "jul"}:
            if (
                name[0].islower()
                and year is None
                and not re.search(
                    rf"\b(?:in|for|of|during|since|from|to|and|through|until|vs)\s+{word}\b", low
                )
            ):
                continue  # bare lower-case abbreviation: too ambiguous
        mon = _MONTH_NAMES.get(word) or _MONTH_ABBR[word]
        found.append(_resolve_month_number(mon, year, data))
    if not found:
        return None
    distinct = sorted(set(found))
    if len(distinct) == 1:
        if re.search(r"\bsince\b", low):
            start = distinct[0]
            return tuple(m for m in data.months if m >= start) or (start,)
        return (distinct[0],)
    if re.search(r"\b(?:to|through|thru|until|till|between)\b|[–-]\s*\w", low):
        out = [distinct[0]]
        while out[-1] < distinct[-1]:
            out.append(shift_month(out[-1], 1))
        return tuple(out)
    return tuple(distinct)


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostQuery:
    intent: str
    dimension: str | None = None
    months: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    top_n: int | None = None

    def filter_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.filters)

    def to_args(self) -> dict[str, Any]:
        """JSON-friendly arguments, as shown in the ``query_cost_data`` function call."""
        args: dict[str, Any] = {"intent": self.intent}
        if self.dimension:
            args["dimension"] = self.dimension
        args["months"] = list(self.months) if self.months else "all"
        if self.filters:
            args["filters"] = {d: list(v) for d, v in self.filters}
        if self.top_n:
            args["top_n"] = self.top_n
        return args


def make_filters(mapping: dict[str, Sequence[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((d, tuple(sorted(set(mapping[d])))) for d in DIMENSIONS if mapping.get(d))


_SPEAKER_RE = re.compile(r"^\s*(?:\*{0,2})([A-Za-z][\w.'’ -]{0,40}?)(?:\*{0,2}):\s+(?=\S)")
_MENTION_RE = re.compile(r"<[@!#][^>]*>")


def strip_speaker(text: str) -> str:
    """Remove a bridge-added ``Name: `` prefix and Slack ``<@U123>`` mentions."""
    text = _MENTION_RE.sub(" ", text).strip()
    m = _SPEAKER_RE.match(text)
    if m and len(m.group(1).split()) <= 4 and "?" not in m.group(1):
        text = text[m.end() :]
    return re.sub(r"\s+", " ", text).strip()


SERVICE_ALIASES: dict[str, tuple[str, ...]] = {
    "BigQuery": ("bigquery", "big query", "bq"),
    "Compute Engine": ("compute engine", "gce"),
    "Cloud Storage": ("cloud storage", "gcs"),
    "Cloud SQL": ("cloud sql", "cloudsql"),
    "GKE": ("gke", "kubernetes engine", "google kubernetes engine"),
    "Vertex AI": ("vertex ai", "vertex"),
    "Cloud Run": ("cloud run",),
    "Pub/Sub": ("pub/sub", "pubsub", "pub sub"),
    "Cloud Logging": ("cloud logging", "stackdriver"),
    "Cloud Monitoring": ("cloud monitoring",),
    "Cloud Load Balancing": ("cloud load balancing", "load balancing", "load balancer"),
    "Cloud CDN": ("cloud cdn",),
    "Dataflow": ("dataflow",),
    "EC2": ("ec2",),
    "S3": ("s3",),
    "RDS": ("rds",),
    "Lambda": ("lambda",),
    "EKS": ("eks",),
    "CloudFront": ("cloudfront", "cloud front"),
    "DynamoDB": ("dynamodb", "dynamo"),
    "ElastiCache": ("elasticache",),
    "CloudWatch": ("cloudwatch",),
    "NAT Gateway": ("nat gateway", "nat gateways", "nat"),
    "Redshift": ("redshift",),
    "SageMaker": ("sagemaker",),
}
PROVIDER_ALIASES = {
    "GCP": ("gcp", "google cloud", "google"),
    "AWS": ("aws", "amazon web services", "amazon"),
}
ENV_ALIASES = {
    "prod": ("prod", "production"),
    "staging": ("staging", "stage", "stg"),
    "dev": ("dev", "development"),
}
_DIMENSION_WORDS = {
    "service": "service", "services": "service", "product": "service", "products": "service",
    "team": "team", "teams": "team",
    "project": "project", "projects": "project", "account": "project", "accounts": "project",
    "provider": "provider", "providers": "provider", "cloud": "provider", "clouds": "provider",
    "env": "env", "envs": "env", "environment": "env", "environments": "env",
}  # fmt: skip
_DIM_WORD_RE = "|".join(sorted(_DIMENSION_WORDS, key=len, reverse=True))
_CLOUD_SERVICE_GUARD = r"(?!\s+(?:sql|storage|run|logging|monitoring|cdn|load|front))"
_BY_DIM_RE = re.compile(
    rf"\b(?:by|per|across|for\s+each|each|which|what)\s+(?:the\s+)?({_DIM_WORD_RE})\b"
    + _CLOUD_SERVICE_GUARD
)
_DIM_BREAKDOWN_RE = re.compile(rf"\b({_DIM_WORD_RE})\s+(?:breakdown|split|mix)\b")
_ANY_DIM_RE = re.compile(rf"\b({_DIM_WORD_RE})\b" + _CLOUD_SERVICE_GUARD)

_HELP_RE = re.compile(
    r"^(?:help|\?|hi|hello|hey|yo|start|menu|examples?)\W*$"
    r"|\b(?:what can you (?:do|answer)|how do i use|what do you know|what questions"
    r"|which questions|what data|show (?:me )?examples)\b"
)
_THANKS_RE = re.compile(
    r"^(?:thanks?(?: you)?|thx|ty|cheers|great|perfect|cool|nice|ok(?:ay)?)\W*(?:\w+\W*)?$"
)
_ANOMALY_RE = re.compile(
    r"\b(?:anomal\w*|spikes?|spiked|spiking|unusual|outliers?|increases?|increased|jump\w*|grew"
    r"|went up|go up|gone up|surge\w*|rose|what changed|biggest changes?|regress\w*)\b"
)
_TREND_RE = re.compile(
    r"\b(?:trends?|trending|month[\s-]+over[\s-]+month|m-?o-?m|over time|per month|by month"
    r"|each month|every month|monthly|month by month|history|historical"
    r"|growth|evolution|evolve\w*|changed over)\b"
)
_TOP_RE = re.compile(
    r"\btop\s*(\d+|[a-z]+)?\b|\b(?:(\d+|[a-z]+)\s+)?(?:most\s+expensive|biggest|largest|highest"
    r"|costliest|priciest)\b|\bspends?\s+the\s+most\b|\bcosts?\s+the\s+most\b"
)
_BREAKDOWN_RE = re.compile(
    r"\b(?:breakdown|break(?:\s+\w+)?\s+down|split|by|per|across|group(?:ed)?\s+by|distribution)\b"
)
_TOTAL_RE = re.compile(
    r"\b(?:total|spend|spent|spending|cost|costs|costing|bill|billing|invoice|pay|paid"
    r"|how much|expenses?|charges?|usd|dollars)\b"
)
_COMPARE_RE = re.compile(r"\b(?:vs\.?|versus|compared?|comparison|against)\b")
_FOLLOW_UP_RE = re.compile(
    r"^(?:and|also|plus|ok(?:ay)?|so|then|now|what about|how about|same|but|only|just|same for)\b"
    r"|\b(?:that|those|these|it|them|same|instead|there|this one|month before|previous month"
    r"|prior month|before that|after that|month after|next month|following month)\b"
)


def _phrase_re(phrase: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w/-])" + re.escape(phrase).replace(r"\ ", r"\s+") + r"(?![\w/-])")


def _extract_filters(low: str, data: CostData) -> tuple[dict[str, list[str]], str]:
    """Find dimension values named in ``low``. Returns them and the text with matches blanked."""
    found: dict[str, list[str]] = defaultdict(list)

    def take(dimension: str, canonical: str, phrases: Iterable[str]) -> None:
        nonlocal low
        for phrase in sorted(phrases, key=len, reverse=True):
            pattern = _phrase_re(phrase)
            if pattern.search(low):
                if canonical not in found[dimension]:
                    found[dimension].append(canonical)
                low = pattern.sub(" ", low)

    for project in data.values["project"]:
        take("project", project, [project.lower()])
    services = set(data.values["service"])
    for canonical, aliases in SERVICE_ALIASES.items():
        if canonical in services:
            take("service", canonical, (*aliases, canonical.lower()))
    for canonical in services - set(SERVICE_ALIASES):
        take("service", canonical, [canonical.lower()])
    for canonical, aliases in PROVIDER_ALIASES.items():
        take("provider", canonical, aliases)
    for canonical, aliases in ENV_ALIASES.items():
        take("env", canonical, aliases)
    teams = set(data.values["team"])
    for team in sorted(teams):
        phrases = [f"{team} team", f"team {team}", f"{team}-team", f"{team} teams"]
        if team == "ml":
            phrases += ["machine learning", "ml"]
        elif team != "data":  # "data" alone is too ambiguous ("cost data")
            phrases.append(team)
        take("team", team, phrases)
    return {k: v for k, v in found.items() if v}, low


@dataclass
class _Parsed:
    intent: str | None = None
    dimension: str | None = None
    period: tuple[str, ...] | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    top_n: int | None = None
    follow_up_marker: bool = False


def _parse_parts(text: str, data: CostData, anchor: Sequence[str] | None) -> _Parsed:
    low = text.lower().strip()
    parsed = _Parsed()
    parsed.period = parse_period(text, data, anchor)
    parsed.filters, rest = _extract_filters(low, data)
    parsed.follow_up_marker = bool(_FOLLOW_UP_RE.search(rest))

    if m := _BY_DIM_RE.search(rest) or _DIM_BREAKDOWN_RE.search(rest):
        parsed.dimension = _DIMENSION_WORDS[m.group(1)]

    top = _TOP_RE.search(rest)
    if top:
        token = top.group(1) or top.group(2)
        parsed.top_n = (_to_int(token) if token else None) or (
            DEFAULT_TOP_N if top.group(0).startswith("top") else None
        )

    if _HELP_RE.search(low):
        parsed.intent = "help"
    elif _THANKS_RE.search(low):
        parsed.intent = "thanks"
    elif _ANOMALY_RE.search(rest):
        parsed.intent = "anomalies"
    elif _TREND_RE.search(rest):
        parsed.intent = "trend"
    elif _COMPARE_RE.search(rest):
        # "GCP vs AWS" compares values of one dimension; "September vs October" compares months.
        multi = [d for d in DIMENSIONS if len(parsed.filters.get(d, ())) > 1]
        if multi:
            parsed.intent, parsed.dimension = "breakdown", multi[0]
        elif parsed.period is not None and len(parsed.period) != 1:
            parsed.intent = "trend"
    elif top or parsed.dimension or _BREAKDOWN_RE.search(rest):
        parsed.intent = "breakdown"
    elif _TOTAL_RE.search(rest):
        parsed.intent = "total"

    if parsed.intent == "breakdown" and parsed.dimension is None:
        if m := _ANY_DIM_RE.search(rest):
            parsed.dimension = _DIMENSION_WORDS[m.group(1)]
    if parsed.intent == "breakdown" and not top and parsed.dimension is None:
        # "split"/"by"/"per" without a dimension word is not a breakdown request.
        parsed.intent = "total" if _TOTAL_RE.search(rest) else None
    return parsed


def parse_question(text: str, data: CostData, previous: CostQuery | None = None) -> CostQuery:
    """Turn one message into a :class:`CostQuery`, using ``previous`` for follow-ups."""
    text = strip_speaker(text)
    if previous is not None and previous.intent in {"help", "thanks"}:
        previous = None
    parts = _parse_parts(text, data, previous.months if previous else None)
    if parts.intent in {"help", "thanks"}:
        return CostQuery(intent=parts.intent)

    has_subject = bool(parts.filters or parts.period is not None or parts.dimension)
    follow_up = previous is not None and (
        parts.follow_up_marker or (parts.intent is None and has_subject)
    )
    if follow_up and previous is not None:
        intent = parts.intent or previous.intent
        filters = {d: list(v) for d, v in previous.filters}
        filters.update(parts.filters)
        months = previous.months if parts.period is None else parts.period
        dimension = parts.dimension or (previous.dimension if intent == previous.intent else None)
        top_n = parts.top_n or (previous.top_n if intent == previous.intent else None)
    else:
        intent = parts.intent or ("total" if has_subject else "help")
        if intent == "help":
            return CostQuery(intent="help")
        filters = dict(parts.filters)
        months = parts.period or ()
        dimension = parts.dimension
        top_n = parts.top_n

    if intent == "breakdown":
        dimension = dimension or "service"
        if len(filters.get(dimension, ())) <= 1:
            filters.pop(dimension, None)  # a breakdown over one filtered value is one row
    elif intent != "anomalies":
        dimension, top_n = None, None
    return CostQuery(
        intent=intent,
        dimension=dimension,
        months=tuple(sorted(months)),
        filters=make_filters(filters),
        top_n=top_n,
    )


def interpret_conversation(history: Sequence[str], question: str, data: CostData) -> CostQuery:
    """Parse ``question`` in the context of the earlier user messages ``history`` (oldest first).

    The earlier messages are parsed again in order, so that follow-ups chain ("BigQuery last
    month" → "and the month before?" → "break that down by project").
    """
    previous: CostQuery | None = None
    for message in history:
        query = parse_question(message, data, previous)
        if query.intent not in {"help", "thanks"}:
            previous = query
    return parse_question(question, data, previous)


# --------------------------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------------------------


def select_rows(
    data: CostData,
    months: Sequence[str] = (),
    filters: dict[str, Sequence[str]] | None = None,
) -> list[CostRow]:
    month_set = set(months)
    wanted = {d: set(v) for d, v in (filters or {}).items()}
    return [
        r
        for r in data.rows
        if (not month_set or r.month in month_set)
        and all(r.value(d) in values for d, values in wanted.items())
    ]


def total_cost(rows: Iterable[CostRow]) -> float:
    return round(sum(r.cost_usd for r in rows), 2)


def group_costs(rows: Iterable[CostRow], dimension: str) -> list[tuple[str, float]]:
    """Cost per value of ``dimension``, largest first (ties by name)."""
    sums: dict[str, float] = defaultdict(float)
    for r in rows:
        sums[r.value(dimension)] += r.cost_usd
    return sorted(((k, round(v, 2)) for k, v in sums.items()), key=lambda kv: (-kv[1], kv[0]))


def monthly_costs(rows: Iterable[CostRow], months: Sequence[str]) -> list[tuple[str, float]]:
    """Cost per month for each of ``months`` (in order; 0 for months without rows)."""
    sums: dict[str, float] = defaultdict(float)
    for r in rows:
        sums[r.month] += r.cost_usd
    return [(m, round(sums.get(m, 0.0), 2)) for m in months]


@dataclass(frozen=True)
class CostChange:
    key: tuple[str, ...]
    before: float
    after: float

    @property
    def delta(self) -> float:
        return round(self.after - self.before, 2)

    @property
    def pct(self) -> float | None:
        return None if self.before == 0 else (self.after - self.before) / self.before * 100.0

    @property
    def is_anomaly(self) -> bool:
        pct = self.pct
        return self.delta >= ANOMALY_MIN_USD and (pct is None or pct >= ANOMALY_MIN_PCT)


def cost_changes(
    data: CostData,
    month: str,
    previous_month: str,
    keys: Sequence[str] = ("service", "project"),
    filters: dict[str, Sequence[str]] | None = None,
) -> list[CostChange]:
    """Per-line-item change from ``previous_month`` to ``month``, biggest increase first."""
    before: dict[tuple[str, ...], float] = defaultdict(float)
    after: dict[tuple[str, ...], float] = defaultdict(float)
    for r in select_rows(data, (previous_month, month), filters):
        key = tuple(r.value(k) for k in keys)
        (after if r.month == month else before)[key] += r.cost_usd
    changes = [
        CostChange(key=k, before=round(before.get(k, 0.0), 2), after=round(after.get(k, 0.0), 2))
        for k in set(before) | set(after)
    ]
    return sorted(changes, key=lambda c: (-c.delta, c.key))


def pct_change(before: float, after: float) -> float | None:
    return None if before == 0 else (after - before) / before * 100.0


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def usd(value: float, *, sign: bool = False) -> str:
    text = f"${abs(value):,.2f}"
    if value < 0:
        return "-" + text
    return ("+" + text) if sign else text


def pct(value: float | None, *, sign: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}%" if sign else f"{value:.1f}%"


def share(part: float, total: float) -> str:
    """``part`` as a percentage of ``total``, e.g. ``12.3%``."""
    return pct(part / total * 100 if total else None, sign=False)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """GitHub table; ``align`` has one char per column: ``l`` or ``r``."""
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def filter_label(filters: dict[str, Sequence[str]]) -> str:
    parts: list[str] = []
    for d in DIMENSIONS:
        values = filters.get(d)
        if not values:
            continue
        joined = " + ".join(values)
        parts.append(
            f"{joined} team" if d == "team" else (f"{joined} env" if d == "env" else joined)
        )
    return " · ".join(parts)


def _scope(filters: dict[str, Sequence[str]], period: str) -> str:
    label = filter_label(filters)
    return f"{label}, {period}" if label else period


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryResult:
    query: CostQuery
    markdown: str
    summary: dict[str, Any]


EXAMPLE_QUESTIONS: tuple[str, ...] = (
    "What was our total cloud spend last month?",
    "What did we spend on BigQuery last month?",
    "Show spend by team for October",
    "Break down costs by service / project / provider / environment",
    "What are our top 5 services?",
    "Show the month-over-month trend for AWS",
    "Any cost anomalies or big increases last month?",
    "Follow-ups: “and the month before?”, “break that down by team”, “what about EC2?”",
)


def _help_answer(data: CostData) -> str:
    examples = "\n".join(f"• {q}" for q in EXAMPLE_QUESTIONS)
    return (
        "**I'm the FinOps cost data analyst.** I answer questions about the cloud bill "
        f"({period_label((), data)}, {len(data.values['service'])} services on GCP and AWS, "
        f"teams {', '.join(data.values['team'])}).\n\n"
        f"Try for example:\n{examples}\n\n"
        "_Months can be named (“October”, “2026-09”, “Q3”), relative (“last month” = "
        f"{month_label(data.latest_month)}, “last 3 months”) or left out for all data._"
    )


def _no_data_answer(query: CostQuery, data: CostData) -> QueryResult:
    period = period_label(query.months, data)
    scope = filter_label(query.filter_dict())
    what = f" for {scope}" if scope else ""
    text = (
        f"**No cost data{what} in {period}.** The dataset covers "
        f"{period_label((), data)}; try another month or ask “help” for examples."
    )
    return QueryResult(query, text, {"rows": 0, "total_usd": 0.0, "period": period})


def _share_rows(
    groups: Sequence[tuple[str, float]], total: float, top_n: int | None
) -> tuple[list[list[str]], list[tuple[str, float]]]:
    shown = list(groups[:top_n]) if top_n else list(groups)
    rows = [[name, usd(cost), pct(cost / total * 100 if total else None, sign=False)]
            for name, cost in shown]  # fmt: skip
    rest = groups[len(shown) :]
    if rest:
        other = round(sum(c for _, c in rest), 2)
        rows.append(
            [
                f"_All others ({len(rest)})_",
                usd(other),
                pct(other / total * 100 if total else None, sign=False),
            ]
        )
    rows.append(["**Total**", f"**{usd(total)}**", "**100.0%**"])
    return rows, shown


def _answer_total(query: CostQuery, data: CostData) -> QueryResult:
    filters = query.filter_dict()
    rows = select_rows(data, query.months, filters)
    if not rows:
        return _no_data_answer(query, data)
    months = query.months or data.months
    total = total_cost(rows)
    period = period_label(query.months, data)
    subject = filter_label(filters) or "all cloud services"

    # Compare with the same number of months just before.
    n = len(months)
    earlier = tuple(shift_month(m, -n) for m in months)
    prev_total = None
    if set(earlier) <= set(data.months):
        prev_total = total_cost(select_rows(data, earlier, filters))
    label = filter_label(filters)
    what = f"Spend for {label}" if label else "Total cloud spend"
    lead = f"**{what} in {period}: {usd(total)}**"
    if prev_total:
        lead += f" ({pct(pct_change(prev_total, total))} vs {period_label(earlier, data)})"
    lead += "."
    if n > 1:
        lead += f" That is {usd(total / n)} per month on average."

    secondary = "project" if "service" in filters else "service"
    groups = group_costs(rows, secondary)
    table_rows, shown = _share_rows(groups, total, DEFAULT_TOP_N if len(groups) > 7 else None)
    table = markdown_table([DIMENSION_TITLES[secondary], "Cost", "Share"], table_rows, "lrr")

    all_spend = total_cost(select_rows(data, query.months))
    if filters and all_spend:
        takeaway = (
            f"{subject} is {share(total, all_spend)} of all cloud spend in {period}; "
            f"{shown[0][0]} is the largest {secondary} at {share(shown[0][1], total)}."
        )
    else:
        top3 = sum(c for _, c in groups[:3])
        takeaway = (
            f"the top 3 {secondary}s ({', '.join(g for g, _ in groups[:3])}) make up "
            f"{share(top3, total)} of the total."
        )
    text = f"{lead}\n\n{table}\n\n_Takeaway: {takeaway}_"
    summary: dict[str, Any] = {
        "rows": len(rows),
        "total_usd": total,
        "period": period,
        f"top_{secondary}": shown[0][0],
    }
    if prev_total:
        summary["previous_total_usd"] = prev_total
    return QueryResult(query, text, summary)


def _answer_breakdown(query: CostQuery, data: CostData) -> QueryResult:
    filters = query.filter_dict()
    rows = select_rows(data, query.months, filters)
    if not rows:
        return _no_data_answer(query, data)
    dim = query.dimension or "service"
    total = total_cost(rows)
    period = period_label(query.months, data)
    groups = group_costs(rows, dim)
    table_rows, shown = _share_rows(groups, total, query.top_n)
    title = DIMENSION_TITLES[dim]
    if query.top_n:
        heading = (
            f"### Top {min(query.top_n, len(groups))} {dim}s by cost — {_scope(filters, period)}"
        )
    else:
        heading = f"### Spend by {title.lower()} — {_scope(filters, period)}"
    table = markdown_table([title, "Cost", "Share"], table_rows, "lrr")
    leader, leader_cost = shown[0]
    takeaway = f"{leader} is the largest {dim} at {usd(leader_cost)} ({share(leader_cost, total)})"
    k = len(shown) if query.top_n else 3
    if 2 <= k < len(groups):
        top_k = sum(c for _, c in groups[:k])
        takeaway += f"; the top {k} make up {share(top_k, total)} of {usd(total)}."
    else:
        takeaway += f" of {usd(total)}."
    text = f"{heading}\n\n{table}\n\n_Takeaway: {takeaway}_"
    summary = {
        "rows": len(rows),
        "total_usd": total,
        "period": period,
        f"top_{dim}": leader,
        "groups": len(groups),
    }
    return QueryResult(query, text, summary)


def _answer_trend(query: CostQuery, data: CostData) -> QueryResult:
    filters = query.filter_dict()
    months = list(query.months or data.months)
    if len(months) == 1:
        months = [shift_month(months[0], -1), months[0]]
    months = [m for m in months if m in data.months]
    rows = select_rows(data, months, filters)
    if not rows:
        return _no_data_answer(query, data)
    series = monthly_costs(rows, months)
    table_rows: list[list[str]] = []
    prev: float | None = None
    biggest: tuple[str, float] | None = None
    for month, cost in series:
        if prev is None:
            table_rows.append([month_label(month), usd(cost), "—", "—"])
        else:
            change = pct_change(prev, cost)
            table_rows.append(
                [month_label(month), usd(cost), usd(cost - prev, sign=True), pct(change)]
            )
            if change is not None and (biggest is None or abs(change) > abs(biggest[1])):
                biggest = (month, change)
        prev = cost
    total = round(sum(c for _, c in series), 2)
    table_rows.append(["**Total**", f"**{usd(total)}**", "", ""])
    period = period_label(months, data)
    heading = f"### Month-over-month spend — {_scope(filters, period)}"
    table = markdown_table(["Month", "Cost", "Change", "Change %"], table_rows, "lrrr")
    first, last = series[0], series[-1]
    overall = pct_change(first[1], last[1])
    direction = "grew" if last[1] >= first[1] else "fell"
    takeaway = (
        f"spend {direction} {pct(abs(overall) if overall is not None else None, sign=False)} "
        f"from {month_label(first[0], short=True)} "
        f"to {month_label(last[0], short=True)} (average {usd(total / len(series))}/month)"
    )
    if biggest is not None:
        takeaway += (
            f"; the largest move was {month_label(biggest[0], short=True)} ({pct(biggest[1])})."
        )
    else:
        takeaway += "."
    text = f"{heading}\n\n{table}\n\n_Takeaway: {takeaway}_"
    summary = {
        "rows": len(rows),
        "total_usd": total,
        "period": period,
        "first_month_usd": first[1],
        "last_month_usd": last[1],
        "change_pct": None if overall is None else round(overall, 1),
    }
    return QueryResult(query, text, summary)


def _answer_anomalies(query: CostQuery, data: CostData) -> QueryResult:
    filters = query.filter_dict()
    month = (query.months or data.months)[-1]
    previous = shift_month(month, -1)
    if month not in data.months or previous not in data.months:
        text = (
            f"**I can't compare {month_label(month)} with the month before** — the dataset covers "
            f"{period_label((), data)}. Try a month from {month_label(data.months[1])} on."
        )
        return QueryResult(query, text, {"rows": 0, "period": month_label(month)})
    keys: tuple[str, ...] = (query.dimension,) if query.dimension else ("service", "project")
    changes = cost_changes(data, month, previous, keys, filters)
    increases = [c for c in changes if c.delta > 0]
    top_n = query.top_n or DEFAULT_TOP_N
    before_total = total_cost(select_rows(data, (previous,), filters))
    after_total = total_cost(select_rows(data, (month,), filters))
    scope = _scope(filters, f"{month_label(month)} vs {month_label(previous)}")
    heading = f"### Biggest cost increases — {scope}"
    if not increases:
        text = (
            f"{heading}\n\nNo line item got more expensive. "
            f"Total: {usd(before_total)} → {usd(after_total)}."
        )
        return QueryResult(query, text, {"rows": 0, "anomalies": 0, "period": month_label(month)})
    headers = [DIMENSION_TITLES[k] for k in keys] + [
        month_label(previous, short=True), month_label(month, short=True), "Change", "Change %",
    ]  # fmt: skip
    table_rows = []
    for c in increases[:top_n]:
        flag = " ⚠️" if c.is_anomaly else ""
        table_rows.append(
            [
                *c.key[:-1],
                c.key[-1] + flag,
                usd(c.before),
                usd(c.after),
                usd(c.delta, sign=True),
                pct(c.pct),
            ]
        )
    table = markdown_table(headers, table_rows, "l" * len(keys) + "rrrr")
    flagged = [c for c in increases if c.is_anomaly]
    top = increases[0]
    top_name = " in ".join(top.key)
    total_change = pct_change(before_total, after_total)
    if flagged:
        takeaway = (
            f"{len(flagged)} item{'s' if len(flagged) != 1 else ''} jumped ≥{ANOMALY_MIN_PCT:.0f}% "
            f"and ≥{usd(ANOMALY_MIN_USD)} (⚠️); the biggest is {top_name} "
            f"({usd(top.delta, sign=True)}, {pct(top.pct)})."
        )
    else:
        takeaway = (
            f"no anomalies; the biggest increase is {top_name} ({usd(top.delta, sign=True)})."
        )
    lead = (
        f"**Total spend went from {usd(before_total)} to {usd(after_total)} "
        f"({pct(total_change)}).**"
    )
    text = f"{heading}\n\n{lead}\n\n{table}\n\n_Takeaway: {takeaway}_"
    summary = {
        "rows": len(select_rows(data, (previous, month), filters)),
        "period": f"{month_label(month)} vs {month_label(previous)}",
        "anomalies": len(flagged),
        "biggest_increase": top_name,
        "biggest_increase_usd": top.delta,
    }
    return QueryResult(query, text, summary)


def run_query(query: CostQuery, data: CostData | None = None) -> QueryResult:
    data = data or load_cost_data()
    if query.intent == "thanks":
        return QueryResult(query, "You're welcome! Ask me anything else about the cloud bill.", {})
    if query.intent == "total":
        return _answer_total(query, data)
    if query.intent == "breakdown":
        return _answer_breakdown(query, data)
    if query.intent == "trend":
        return _answer_trend(query, data)
    if query.intent == "anomalies":
        return _answer_anomalies(query, data)
    return QueryResult(query, _help_answer(data), {"help": True})


def answer_conversation(
    history: Sequence[str], question: str, data: CostData | None = None
) -> QueryResult:
    data = data or load_cost_data()
    return run_query(interpret_conversation(history, question, data), data)

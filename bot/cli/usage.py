"""`python -m bot usage --by channel|workspace|day|model --since 30d [--csv]`: the tokens
the agent's runs used, from the per-day usage hashes in Redis (bot/store/keys.py,
bot/usage.py), as a table or as CSV, with an estimated cost when TOKEN_PRICES is set.

Each day is a UTC day. `--since` reaches back at most USAGE_RETENTION_DAYS (by default
30 days, or USAGE_RETENTION_DAYS when that is shorter). The report only reads: it leaves a
prefix with no keys unmarked (bot/store/layout.py check_layout)."""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from bot.cli import duration_arg, parse_duration, render_table
from bot.cli.sessions import CliError, run_with_settings
from bot.config import Settings
from bot.store.connect import REDIS_FAILURES, close_redis, describe_redis, redis_client
from bot.store.keys import Keys
from bot.store.layout import LayoutError, check_layout
from bot.usage import (
    CACHED,
    CANDIDATES,
    KINDS,
    PROMPT,
    THOUGHTS,
    TOOL_USE,
    TURNS,
    PriceTable,
    by_kind,
    cost,
    format_usd,
    parse_day_field,
    total,
)

DIMENSIONS = ("channel", "workspace", "day", "model")
KEY_HEADERS: Mapping[str, tuple[str, ...]] = {
    "channel": ("workspace", "channel"), "workspace": ("workspace",), "day": ("day",),
    "model": ("model",),
}
KIND_HEADERS = {PROMPT: "prompt", CACHED: "cached", TOOL_USE: "tool_use",
                CANDIDATES: "candidates", THOUGHTS: "thoughts"}
DAY = 86400
DEFAULT_SINCE_DAYS = 30
# A CSV cell a spreadsheet would read as a formula starts with one of these; such a cell
# gets a leading ' (https://owasp.org/www-community/attacks/CSV_Injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NOTES = "PROMPT includes CACHED; TOTAL is PROMPT + TOOL_USE + CANDIDATES + THOUGHTS."


# ---- the report (pure) ----------------------------------------------------------------


@dataclass
class Row:
    """One line of the report: its key (by the dimension), its turns and its tokens."""

    key: tuple[str, ...]
    turns: int = 0
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, model: str, kind: str, count: int) -> None:
        self.tokens[model, kind] = self.tokens.get((model, kind), 0) + count


def utc_days(now: float, since_seconds: float) -> list[str]:
    """The UTC days (YYYY-MM-DD) from the one `since_seconds` before `now` to today."""
    first = int((now - since_seconds) // DAY)
    last = int(now // DAY)
    return [time.strftime("%Y-%m-%d", time.gmtime(day * DAY)) for day in range(first, last + 1)]


def default_since(retention_days: int) -> str:
    """`--since` when none is given: 30 days, or the retention when it is shorter."""
    return f"{min(DEFAULT_SINCE_DAYS, retention_days)}d"


def since_seconds(text: str | None, retention_days: int) -> float:
    """`--since` in seconds (None: `default_since`); CliError (exit 2) when it is not a
    duration or reaches back further than the usage is kept."""
    if text is None:
        text = default_since(retention_days)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", 2) from None
    if seconds > retention_days * DAY:
        raise CliError(f"--since {text.strip()} reaches back further than the usage is kept "
                       f"(USAGE_RETENTION_DAYS={retention_days}); use at most "
                       f"{retention_days}d", 2)
    return seconds


def aggregate(days: Mapping[str, Mapping[str, int]], by: str) -> tuple[list[Row], Row]:
    """The rows of the report by `by` (one of DIMENSIONS) from each day's usage fields
    (all shards added up), and the row of their total. By model, a row's turns are the
    turns that used the model; otherwise, and in the total, every turn of the agent."""
    rows: dict[tuple[str, ...], Row] = {}
    whole = Row(("TOTAL",))
    for day, fields in days.items():
        for name, count in fields.items():
            parsed = parse_day_field(name)
            if parsed is None:
                continue
            key = {"channel": (parsed.workspace, parsed.channel),
                   "workspace": (parsed.workspace,), "day": (day,),
                   "model": (parsed.model,)}[by]
            if parsed.kind == TURNS:
                if not parsed.model:
                    whole.turns += count
                if (by == "model") == bool(parsed.model):
                    rows.setdefault(key, Row(key)).turns += count
                continue
            rows.setdefault(key, Row(key)).add(parsed.model, parsed.kind, count)
            whole.add(parsed.model, parsed.kind, count)
    ordered = sorted(rows.values(), key=lambda r: r.key) if by == "day" else sorted(
        rows.values(), key=lambda r: (-total(r.tokens.items()), r.key))
    return ordered, whole


def _cost_cell(row: Row, prices: PriceTable, unpriced: set[str]) -> str:
    usd, missing = cost(row.tokens, prices)
    unpriced.update(missing)
    return "-" if missing else format_usd(usd)


def render_report(rows: Sequence[Row], whole: Row, *, by: str, days: Sequence[str],
                  prices: PriceTable, source: str = "") -> str:
    """The report as an aligned table with a total row, and what its columns mean;
    `source` says where an empty report looked (the prefix and the Redis)."""
    span = f"{days[0]} to {days[-1]} (UTC)" if days else "(no days)"
    if not rows:
        return f"No token usage recorded from {span}" + (f" {source}." if source else ".")
    width = len(KEY_HEADERS[by])
    headers = [h.upper() for h in KEY_HEADERS[by]] + [
        "TURNS", *(KIND_HEADERS[k].upper() for k in KINDS), "TOTAL"]
    unpriced: set[str] = set()
    if prices:
        headers.append("EST. COST")
    table_rows: list[list[object]] = []
    for row in [*rows, whole]:
        kinds = by_kind(row.tokens)
        key = list(row.key) + [""] * (width - len(row.key))
        cells: list[object] = [*key, f"{row.turns:,}", *(f"{kinds[k]:,}" for k in KINDS),
                               f"{total(row.tokens.items()):,}"]
        if prices:
            cells.append(_cost_cell(row, prices, unpriced))
        table_rows.append(cells)
    lines = [f"Token usage by {by}, {span}", "",
             render_table(headers, table_rows, right=range(width, len(headers))), "",
             NOTES]
    if by == "model":
        lines.append("A model's TURNS are the turns that used it; the TOTAL row's are every "
                     "turn.")
    if prices:
        lines.append("EST. COST: USD from TOKEN_PRICES; cached tokens at the cached rate, the "
                     "rest of the prompt at the prompt rate.")
    if unpriced:
        lines.append(f"-: TOKEN_PRICES has no price for {', '.join(sorted(unpriced))}.")
    return "\n".join(lines)


def csv_text(value: str) -> str:
    """A text cell as CSV holds it: with a leading ' when a spreadsheet would take it for a
    formula (a channel or model name is not the bot's to trust)."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def render_csv(rows: Sequence[Row], *, by: str, prices: PriceTable) -> str:
    """The rows (no total) as CSV with a header line; `cost_usd` with TOKEN_PRICES, empty
    for a row with a model that has no price."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    headers = [*KEY_HEADERS[by], "turns", *(KIND_HEADERS[k] for k in KINDS), "total"]
    if prices:
        headers.append("cost_usd")
    writer.writerow(headers)
    for row in rows:
        kinds = by_kind(row.tokens)
        cells: list[object] = [*(csv_text(k) for k in row.key), row.turns,
                               *(kinds[k] for k in KINDS),
                               total(row.tokens.items())]
        if prices:
            usd, missing = cost(row.tokens, prices)
            cells.append("" if missing else f"{usd:.6f}")
        writer.writerow(cells)
    return out.getvalue()


def render_thread_tokens(tokens: Mapping[tuple[str, str], int], prices: PriceTable,
                         *, indent: str = "  ") -> str:
    """A thread's tokens by model and kind (`sessions show`), with the estimated cost when
    TOKEN_PRICES is set."""
    if not tokens:
        return f"{indent}none recorded"
    models = sorted({model for model, _ in tokens})
    rows = [Row((model,), tokens={k: v for k, v in tokens.items() if k[0] == model})
            for model in models]
    if len(rows) > 1:
        rows.append(Row(("TOTAL",), tokens=dict(tokens)))
    headers = ["MODEL", *(KIND_HEADERS[k].upper() for k in KINDS), "TOTAL"]
    if prices:
        headers.append("EST. COST")
    unpriced: set[str] = set()
    cells: list[list[object]] = []
    for row in rows:
        kinds = by_kind(row.tokens)
        line: list[object] = [row.key[0], *(f"{kinds[k]:,}" for k in KINDS),
                              f"{total(row.tokens.items()):,}"]
        if prices:
            line.append(_cost_cell(row, prices, unpriced))
        cells.append(line)
    table = render_table(headers, cells, right=range(1, len(headers)))
    text = "\n".join(f"{indent}{line}" for line in table.splitlines())
    if unpriced:
        text += f"\n{indent}-: TOKEN_PRICES has no price for {', '.join(sorted(unpriced))}."
    return text


# ---- reading Redis ----------------------------------------------------------------------


async def read_days(client: aioredis.Redis, keys: Keys, days: Sequence[str]
                    ) -> dict[str, dict[str, int]]:
    """Each day's usage fields, the shards' hashes added up (one pipeline per shard: a
    shard's keys share one hash tag)."""
    out: dict[str, dict[str, int]] = {day: {} for day in days}
    for shard in keys.all_shards:
        pipe = client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(keys.usage(shard, day))
        for day, fields in zip(days, await pipe.execute(), strict=True):
            merged = out[day]
            for name, value in (fields or {}).items():
                try:
                    merged[str(name)] = merged.get(str(name), 0) + int(value)
                except ValueError:
                    continue
    return out


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    seconds = since_seconds(args.since, settings.usage_retention_days)
    days = utc_days(time.time(), seconds)
    client = redis_client(settings, socket_connect_timeout=5, socket_timeout=30)
    keys = Keys(settings.redis_key_prefix, settings.redis_shards)
    shown = describe_redis(settings)
    try:
        try:
            await client.ping()
        except REDIS_FAILURES as exc:
            raise CliError(f"cannot reach Redis at {shown} ({exc}); check REDIS_URL") from exc
        try:
            await check_layout(client, keys, mark=False)
        except LayoutError as exc:
            raise CliError(str(exc)) from exc
        data = await read_days(client, keys, days)
    except REDIS_FAILURES as exc:
        raise CliError(f"Redis at {shown} failed: {exc}") from exc
    finally:
        await close_redis(client)
    rows, whole = aggregate(data, args.by)
    if args.csv:
        print(render_csv(rows, by=args.by, prices=settings.token_prices), end="")
    else:
        source = f"under REDIS_KEY_PREFIX={keys.prefix!r} in Redis at {shown}"
        print(render_report(rows, whole, by=args.by, days=days, prices=settings.token_prices,
                            source=source))
    return 0


def run_usage(args: argparse.Namespace) -> int:
    return run_with_settings(lambda settings: _report(args, settings))


# ---- argparse -------------------------------------------------------------------------


def add_usage_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser(
        "usage", help="tokens used by channel, workspace, day or model (needs REDIS_URL)",
        description="The tokens the agent's runs used (prompt, cached, tool_use, candidates, "
                    "thoughts), "
                    "from Redis, by UTC day; with TOKEN_PRICES, an estimated cost. Exit codes: "
                    "0 done, 1 Redis unreachable, 2 bad arguments or settings.")
    usage.add_argument("--by", choices=DIMENSIONS, default="channel",
                       help="one row per channel (default), workspace, day or model")
    usage.add_argument("--since", type=duration_arg, default=None, metavar="AGE",
                       help="from the UTC day AGE ago (12h, 30d, 2w) to today; at most "
                            "USAGE_RETENTION_DAYS, which is also the default when it is "
                            "under 30d (else 30d)")
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")


"""Token usage, pure: a turn's tokens by model and kind as Redis keeps them (the fields of
the thread's hash and of the per-day usage hashes, bot/store/keys.py), the price table
(TOKEN_PRICES) and the estimated cost, and the answer's footer line.

The kinds are those of Gemini's `usageMetadata`
(https://ai.google.dev/api/generate-content#UsageMetadata), as bot/adk/events.py counts
them. `promptTokenCount` includes `cachedContentTokenCount`: the cached tokens are part of
the prompt, so a cost prices the cached tokens at the cached rate and only the rest of the
prompt at the prompt rate. `toolUsePromptTokenCount` (kind `tool_use`) counts the tool
results the model was given as input, beside the prompt; a total is prompt + tool_use +
candidates + thoughts, as Gemini's `totalTokenCount` is."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PROMPT, CANDIDATES, THOUGHTS, CACHED = "prompt", "candidates", "thoughts", "cached"
TOOL_USE = "tool_use"
KINDS = (PROMPT, CACHED, TOOL_USE, CANDIDATES, THOUGHTS)  # the order reports show them in
BILLED = (PROMPT, TOOL_USE, CANDIDATES, THOUGHTS)  # what a total adds up
TURNS = "turns"  # the field of a day's turn counts, beside the kinds

# A name Redis keeps in a field (a model, a workspace, a channel): '|' separates a field's
# parts, and a model name comes from ADK's events, so it is bounded and cleaned.
MAX_NAME_CHARS = 100
UNKNOWN = "unknown"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f|]+")

# A thread's hash holds its tokens as `tokens|<model>|<kind>`.
THREAD_FIELD_PREFIX = "tokens|"

# Every price is in USD per million tokens.
PER_TOKENS = 1_000_000
WILDCARD = "*"

Tokens = Mapping[tuple[str, str], int]  # (model, kind) -> count
PriceTable = Mapping[str, Mapping[str, float]]  # model or pattern -> kind -> USD per 1M


def clean_name(name: str) -> str:
    """A name as a usage field holds it: no '|' or control characters, at most
    MAX_NAME_CHARS characters; `unknown` when nothing is left."""
    cleaned = _UNSAFE.sub(" ", name).strip()[:MAX_NAME_CHARS].strip()
    return cleaned or UNKNOWN


@dataclass(frozen=True)
class TurnUsage:
    """What a turn's save records: its tokens, and where the report files them (the
    workspace as the thread key names it, the channel)."""

    workspace: str
    channel: str
    tokens: Tokens = field(default_factory=dict)

    def fields(self) -> list[tuple[str, str, int]]:
        """(field of the thread's hash or "" for none, field of the day's hash, increment)
        for each count the turn adds: the turn itself (`<ws>|<ch>||turns`), and per model
        its tokens by kind and the turn (`<ws>|<ch>|<model>|<kind>`, `…|<model>|turns`)."""
        workspace, channel = clean_name(self.workspace), clean_name(self.channel)
        out: list[tuple[str, str, int]] = [("", f"{workspace}|{channel}||{TURNS}", 1)]
        by_model = merged(self.tokens)
        for model in sorted({m for m, _ in by_model}):
            for kind in KINDS:
                count = by_model.get((model, kind), 0)
                if count > 0:
                    out.append((f"{THREAD_FIELD_PREFIX}{model}|{kind}",
                                f"{workspace}|{channel}|{model}|{kind}", count))
            out.append(("", f"{workspace}|{channel}|{model}|{TURNS}", 1))
        return out


def merged(tokens: Tokens) -> dict[tuple[str, str], int]:
    """The counts with their model names cleaned (names that clean alike are added up),
    kinds other than KINDS and counts below one left out."""
    out: dict[tuple[str, str], int] = {}
    for (model, kind), count in tokens.items():
        if kind in KINDS and count > 0:
            name = clean_name(model)
            out[name, kind] = out.get((name, kind), 0) + int(count)
    return out


def thread_tokens(mapping: Mapping[str, str]) -> dict[tuple[str, str], int]:
    """The tokens a thread's hash holds (its `tokens|<model>|<kind>` fields)."""
    out: dict[tuple[str, str], int] = {}
    for name, value in mapping.items():
        if not name.startswith(THREAD_FIELD_PREFIX):
            continue
        model, _, kind = name[len(THREAD_FIELD_PREFIX):].rpartition("|")
        if model and kind in KINDS and value.lstrip("-").isdigit():
            out[model, kind] = int(value)
    return out


@dataclass(frozen=True)
class DayField:
    """A field of a day's usage hash, read back: `<ws>|<ch>|<model>|<kind>`; the model is
    "" for the count of all the turns of a channel."""

    workspace: str
    channel: str
    model: str
    kind: str  # a kind of KINDS, or TURNS


def parse_day_field(name: str) -> DayField | None:
    parts = name.split("|")
    if len(parts) != 4 or parts[3] not in (*KINDS, TURNS):
        return None
    if not parts[2] and parts[3] != TURNS:
        return None
    return DayField(*parts)


def total(tokens: Iterable[tuple[tuple[str, str], int]]) -> int:
    """prompt + tool_use + candidates + thoughts (the cached tokens are in the prompt)."""
    return sum(count for (_, kind), count in tokens if kind in BILLED)


def by_kind(tokens: Tokens) -> dict[str, int]:
    """The counts of every kind, all models added up."""
    out = dict.fromkeys(KINDS, 0)
    for (_, kind), count in tokens.items():
        if kind in out:
            out[kind] += count
    return out


# ---- prices ---------------------------------------------------------------------------


def parse_prices(value: object) -> dict[str, dict[str, float]]:
    """TOKEN_PRICES: a JSON object (or a mapping) of model names to
    `{"prompt": …, "candidates": …, "thoughts": …, "cached": …, "tool_use": …}`, USD per
    1M tokens. `prompt` and `candidates` are needed; `thoughts` defaults to the candidates
    price, `cached` and `tool_use` to the prompt price. A name ending in `*` prices the
    models it starts (`*` alone: every model). ValueError says what is wrong."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise ValueError('must be a JSON object of models, e.g. {"gemini-2.5-flash": '
                         '{"prompt": 0.30, "candidates": 2.50, "cached": 0.075}}')
    table: dict[str, dict[str, float]] = {}
    for model, prices in value.items():
        if not isinstance(model, str) or clean_name(model) != model:
            raise ValueError(f"{model!r} is not a model name (at most {MAX_NAME_CHARS} "
                             "characters, no '|' or control characters)")
        if not isinstance(prices, Mapping):
            raise ValueError(f"{model}: must be an object of prices by kind "
                             f"({', '.join(KINDS)})")
        unknown = sorted(str(kind) for kind in prices if kind not in KINDS)
        if unknown:
            raise ValueError(f"{model}: unknown kind {', '.join(unknown)}; the kinds are "
                             f"{', '.join(KINDS)}")
        checked: dict[str, float] = {}
        for kind, price in prices.items():
            if (isinstance(price, bool) or not isinstance(price, int | float)
                    or not math.isfinite(price) or price < 0):
                raise ValueError(f"{model}: {kind} must be a number of USD per 1M tokens, "
                                 f"0 or more (not {price!r})")
            checked[kind] = float(price)
        missing = [kind for kind in (PROMPT, CANDIDATES) if kind not in checked]
        if missing:
            raise ValueError(f"{model}: needs a {' and a '.join(missing)} price")
        checked.setdefault(THOUGHTS, checked[CANDIDATES])
        checked.setdefault(CACHED, checked[PROMPT])
        checked.setdefault(TOOL_USE, checked[PROMPT])
        table[model] = {kind: checked[kind] for kind in KINDS}
    return table


def prices_of(model: str, table: PriceTable) -> Mapping[str, float] | None:
    """A model's prices: its own entry, else the longest `name*` it starts with, else `*`;
    None when the table prices it nowhere."""
    if model in table:
        return table[model]
    best: str | None = None
    for pattern in table:
        if pattern.endswith(WILDCARD) and model.startswith(pattern[:-1]) and (
                best is None or len(pattern) > len(best)):
            best = pattern
    return table[best] if best is not None else None


def cost(tokens: Tokens, table: PriceTable) -> tuple[float, list[str]]:
    """The estimated cost in USD of `tokens`, and the models the table has no price for
    (their tokens are not in the cost). Cached tokens are priced at the cached rate, the
    rest of the prompt at the prompt rate, the tool-use prompt at its own (by default the
    prompt's)."""
    usd = 0.0
    unpriced: set[str] = set()
    per_model: dict[str, dict[str, int]] = {}
    for (model, kind), count in tokens.items():
        per_model.setdefault(model, dict.fromkeys(KINDS, 0))[kind] = count
    for model, counts in per_model.items():
        prices = prices_of(model, table)
        if prices is None:
            unpriced.add(model)
            continue
        cached = min(counts[CACHED], counts[PROMPT])
        usd += ((counts[PROMPT] - cached) * prices[PROMPT] + cached * prices[CACHED]
                + counts[TOOL_USE] * prices[TOOL_USE]
                + counts[CANDIDATES] * prices[CANDIDATES]
                + counts[THOUGHTS] * prices[THOUGHTS]) / PER_TOKENS
    return usd, sorted(unpriced)


def format_usd(usd: float) -> str:
    """$1,234.57 from a dollar up, $0.0047 below it, <$0.0001 for a trace."""
    if usd >= 1:
        return f"${usd:,.2f}"
    if 0 < usd < 0.0001:
        return "<$0.0001"
    return f"${usd:.4f}"


def footer_text(tokens: Tokens, table: PriceTable) -> str:
    """The answer's footer: the turn's tokens, and its estimated cost when every model it
    used has a price. Empty when the turn reports no tokens."""
    kinds = by_kind(tokens)
    whole = total(tokens.items())
    if not whole:
        return ""
    parts = [f"{kinds[PROMPT]:,} in" + (f" ({kinds[CACHED]:,} cached)" if kinds[CACHED] else "")]
    if kinds[TOOL_USE]:
        parts.append(f"{kinds[TOOL_USE]:,} tool results in")
    parts.append(f"{kinds[CANDIDATES]:,} out")
    if kinds[THOUGHTS]:
        parts.append(f"{kinds[THOUGHTS]:,} thinking")
    text = f"{whole:,} tokens: {', '.join(parts)}"
    if table:
        usd, unpriced = cost(tokens, table)
        if not unpriced:
            text += f" · est. {format_usd(usd)}"
    return text

"""Operator commands (`doctor`, `sessions`) and the terminal formatting they share.

Everything here is pure: durations, "3h ago", local times and aligned tables."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """ "90m", "12h", "30d", "2w" (also "45s") -> seconds. ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit: "
                         "90m, 12h, 30d or 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be more than zero")
    return seconds


def duration_arg(text: str) -> str:
    """argparse's `type` for an age ("30d"): checked with `parse_duration`, the text kept
    for the report."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def format_duration(seconds: float) -> str:
    """A short, rounded-down duration: 45s, 12m, 3h, 2d, 5w."""
    seconds = max(0.0, seconds)
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit == "w" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def ago(ts: float, now: float | None = None) -> str:
    """ "3h ago", "just now", "in 5m" (a clock ahead of this one)."""
    now = time.time() if now is None else now
    delta = now - ts
    if -1 < delta < 5:
        return "just now"
    if delta < 0:
        return f"in {format_duration(-delta)}"
    return f"{format_duration(delta)} ago"


def local_time(ts: float) -> str:
    """A Unix time as local time, e.g. 2026-05-01 14:03; "-" for none."""
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def when(ts: float, now: float | None = None) -> str:
    """Local time and age: "2026-05-01 14:03 (3h ago)"; "-" for none."""
    if not ts:
        return "-"
    return f"{local_time(ts)} ({ago(ts, now)})"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 *, right: Sequence[int] = ()) -> str:
    """Columns aligned with two spaces between them; columns in `right` right-aligned.
    No trailing spaces."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines: list[str] = []
    for row in cells:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, object]], *, indent: str = "") -> str:
    """ "label   value" lines with the values aligned."""
    if not pairs:
        return ""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{indent}{label.ljust(width)}  {value}".rstrip() for label, value in pairs)

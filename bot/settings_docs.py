"""The settings reference, generated from `Settings`: docs/configuration.md and .env.example.

`python -m bot.settings_docs` (`make docs`) writes both files from the fields of
`bot.config.Settings`: their descriptions, groups, examples and defaults. `--check` writes
nothing and exits 1 when a file differs from what would be written. Everything but `main` is
pure: a settings model in, text out."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from bot.config import SETTINGS_GROUPS, Settings

# What a new `.env` sets first: .env.example has these lines uncommented.
UNCOMMENTED = frozenset({"slack_bot_token", "adk_base_url", "adk_app_name"})

ENV_HEADER = """\
# adk-slack-bot settings. Copy to .env (`cp .env.example .env`) and fill in the Slack tokens.
# Every setting in bot/config.py is listed here; variable names are case-insensitive, and real
# environment variables override this file. Commented-out lines show the default value.
# Generated from bot/config.py by `make docs` (python -m bot.settings_docs): edit it there.
"""

PAGE_HEADER = """\
# Configuration

<!-- Generated from bot/config.py by `make docs` (python -m bot.settings_docs): edit the
descriptions there, not here. tests/unit/test_settings_docs.py fails when this page is stale. -->

Settings come from environment variables or from a `.env` file in the working directory.
Names are case-insensitive, and environment variables override `.env`. Each variable is the
upper-cased name of a field of `Settings` in `bot/config.py`, which holds its default, its
validation and the description below. [`.env.example`](../.env.example) lists them all, with
the same descriptions. Invalid values stop `serve` at start-up with one `config error:` line
per problem; see [operations.md](operations.md#start-up-checks).
"""

WIDTH = 100
SECTION_RULE_WIDTH = 94
UNSET = "unset"
EMPTY = "empty"


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the reference shows it."""

    field: str
    group: str
    description: str
    default: str | None  # in the variable's syntax; None: unset; "": empty
    example: str | None  # a value worth showing instead of the default, if any
    secret: bool

    @property
    def variable(self) -> str:
        return self.field.upper()


def _is_secret(info: FieldInfo) -> bool:
    annotation = info.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def env_value(value: Any) -> str:
    """A value as it is written in the environment: booleans `true` / `false`, mappings as a
    JSON object, pairs as `title=message;title=message`, other lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), ensure_ascii=False) if value else ""
    if isinstance(value, list | tuple):
        if value and all(isinstance(item, tuple) for item in value):
            return ";".join("=".join(str(part) for part in item) for item in value)
        return ",".join(str(item) for item in value)
    return str(value)


def setting_docs(model: type[BaseSettings] = Settings) -> list[SettingDoc]:
    """Every field of `model`, in the order of its groups, then of the fields.

    Raises ValueError for a field without a description or a known group."""
    docs: list[SettingDoc] = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = extra.get("group")
        if not isinstance(group, str) or group not in SETTINGS_GROUPS:
            raise ValueError(f"{name.upper()}: no group of SETTINGS_GROUPS (bot/config.py)")
        if not info.description or not info.description.strip():
            raise ValueError(f"{name.upper()}: no description (bot/config.py)")
        secret = _is_secret(info)
        value = info.get_default(call_default_factory=True)
        default = None if secret or value is None else env_value(value)
        example = env_value(info.examples[0]) if info.examples else None
        docs.append(SettingDoc(name, group, " ".join(info.description.split()), default,
                               example, secret))
    order = list(SETTINGS_GROUPS)
    return sorted(docs, key=lambda doc: order.index(doc.group))  # stable: fields keep order


def _size(doc: SettingDoc) -> str:
    """` (1 MiB)` after a byte count that is a whole number of KiB or MiB."""
    if not doc.field.endswith("_bytes") or not doc.default or not doc.default.isdigit():
        return ""
    value = int(doc.default)
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if value >= size and value % size == 0:
            return f" ({value // size} {unit})"
    return ""


def _markdown_default(doc: SettingDoc) -> str:
    if doc.default is None:
        return UNSET
    if doc.default == "":
        return EMPTY
    return f"`{doc.default}`{_size(doc)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def configuration_markdown(model: type[BaseSettings] = Settings) -> str:
    """docs/configuration.md: a section per group, a table per section."""
    docs = setting_docs(model)
    groups = [group for group in SETTINGS_GROUPS if any(doc.group == group for doc in docs)]
    lines = [PAGE_HEADER]
    lines.append("Sections: " + " · ".join(f"[{group}](#{_anchor(group)})" for group in groups)
                 + ".\n")
    for group in groups:
        lines.append(f"## {group}\n")
        if SETTINGS_GROUPS[group]:
            lines.append(_paragraph(SETTINGS_GROUPS[group]) + "\n")
        lines.append("| variable | default | meaning |")
        lines.append("| --- | --- | --- |")
        for doc in docs:
            if doc.group == group:
                lines.append(f"| `{doc.variable}` | {_cell(_markdown_default(doc))} | "
                             f"{_cell(doc.description)} |")
        lines.append("")
    return "\n".join(lines)


def _anchor(heading: str) -> str:
    return heading.lower().replace(" ", "-")


def _paragraph(text: str) -> str:
    return "\n".join(textwrap.wrap(" ".join(text.split()), width=92, break_long_words=False,
                                   break_on_hyphens=False))


def _comment(text: str) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=WIDTH, initial_indent="# ",
                         subsequent_indent="# ", break_long_words=False,
                         break_on_hyphens=False)


def env_example(model: type[BaseSettings] = Settings) -> str:
    """.env.example: every setting commented with its description and default."""
    docs = setting_docs(model)
    lines = [ENV_HEADER.rstrip("\n")]
    group = ""
    for doc in docs:
        if doc.group != group:
            group = doc.group
            title = f"# ---- {group} "
            if lines[-1]:
                lines.append("")
            lines += [title + "-" * max(4, SECTION_RULE_WIDTH - len(title)), ""]
            if SETTINGS_GROUPS[group]:
                lines += [*_comment(SETTINGS_GROUPS[group]), ""]
        default = (UNSET if doc.default is None else EMPTY if doc.default == ""
                   else doc.default + _size(doc))
        lines += _comment(doc.description)
        lines.append(f"# Default: {default}")
        value = doc.example if doc.example is not None else (doc.default or "")
        prefix = "" if doc.field in UNCOMMENTED else "# "
        lines.append(f"{prefix}{doc.variable}={value}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


GENERATED: dict[str, Callable[[type[BaseSettings]], str]] = {
    "docs/configuration.md": configuration_markdown,
    ".env.example": env_example,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.settings_docs",
        description="Write docs/configuration.md and .env.example from bot/config.py.",
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file is not what would be written")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository (default: the one this module is in)")
    args = parser.parse_args(argv)
    stale = []
    for relative, render in GENERATED.items():
        path = args.root / relative
        text = render(Settings)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(relative)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    if args.check and stale:
        print(f"not current: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

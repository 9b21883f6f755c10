"""The docs cannot drift from the code: relative links resolve, settings named in backticks
exist, `python -m bot` commands shown exist, and metric names match bot/metrics.py."""

from __future__ import annotations

import fnmatch
import functools
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from bot.config import DEPRECATED_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

# Upper-case names in backticks that are environment variables or constants of other tools,
# not settings of the bot.
NOT_SETTINGS = frozenset({
    "TEST_REDIS_URL",  # the test suite's Redis
    "REQUIRE_REAL_SERVICES",  # CI: fail instead of skipping
    "GOOGLE_API_KEY",  # the demo agent's LLM mode
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DEMO_AGENT_MODEL",
    "DEMO_AGENT_MODE",
    "ADK_PORT",  # a Makefile variable
    "TEST_WORKERS",  # a Makefile variable: the test processes
    "BOT_PUBLISH_ADDR",  # deploy/docker-compose.yml: where the bot's port is published
    "INVOCATION_ABORTED",  # an ADK error code
    "ADK_DISABLE_PROGRESSIVE_SSE_STREAMING",  # ADK's own environment (adk api_server)
    "TOOL_USE",  # a column of `python -m bot usage`
})

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ENV_NAME = re.compile(r"^([A-Z][A-Z0-9]*(?:_[A-Z0-9*]+)+)(?:=\S*)?$")
ENV_LINE = re.compile(r"^\s*(?:export\s+|#\s*)?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)=", re.MULTILINE)
COMMAND = re.compile(r"python -m bot((?: +[^\s#`|]+)*)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def without_code(text: str) -> str:
    """The prose: fenced blocks and inline code removed (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def fenced_blocks(text: str) -> list[str]:
    return [match.group(0) for match in FENCE.finditer(text)]


def setting_names() -> set[str]:
    """The settings, and the deprecated names still read (the settings reference names them
    in the descriptions of their replacements)."""
    return {name.upper() for name in (*Settings.model_fields, *DEPRECATED_NAMES)}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = "".join(
        ch for ch in text
        if ch in "-_ " or unicodedata.category(ch)[0] in ("L", "N")
    )
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", read(path))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def test_the_docs_exist() -> None:
    names = {p.name for p in DOCS if p.parent.name == "docs"}
    assert {"README.md", "architecture.md", "slack-setup.md", "operations.md",
            "troubleshooting.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_relative_links_point_to_files_and_headings_that_exist(path: Path) -> None:
    broken: list[str] = []
    for target in LINK.findall(without_code(read(path))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:, ...
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
            continue
        if fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with the anchor #{fragment}")
    assert not broken, f"{doc_id(path)}: " + "; ".join(broken)


def documented_setting_names(text: str) -> set[str]:
    names = set()
    for span in CODE_SPAN.findall(FENCE.sub("", text)):
        match = ENV_NAME.match(span.strip())
        if match:
            names.add(match.group(1))
    for block in fenced_blocks(text):
        names.update(ENV_LINE.findall(block))
    return names


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_settings_named_in_backticks_are_real_settings(path: Path) -> None:
    settings = setting_names()
    unknown = []
    for name in sorted(documented_setting_names(read(path)) - NOT_SETTINGS):
        if "*" in name:
            if not fnmatch.filter(settings, name):
                unknown.append(name)
        elif name not in settings:
            unknown.append(name)
    assert not unknown, (
        f"{doc_id(path)} names settings that bot/config.py does not have: {unknown}"
    )


@functools.cache
def cli_help(*words: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bot", *words, "--help"], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def subcommands(*words: str) -> set[str]:
    """The sub-commands argparse lists under `positional arguments` ({a,b,c})."""
    match = re.search(r"^ {2}\{([\w,-]+)\}", cli_help(*words), re.MULTILINE)
    return set(match.group(1).split(",")) if match else set()


def shown_commands(text: str) -> list[list[str]]:
    """`python -m bot ...` as shown in inline code and code blocks: its words."""
    places = CODE_SPAN.findall(FENCE.sub("", text)) + fenced_blocks(text)
    commands = []
    for place in places:
        for match in COMMAND.finditer(place):
            commands.append(match.group(1).split())
    return commands


def test_the_cli_has_the_commands_the_docs_rely_on() -> None:
    assert {"serve", "console", "doctor", "sessions"} <= subcommands()


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_python_m_bot_commands_shown_exist(path: Path) -> None:
    problems = []
    for words in shown_commands(read(path)):
        if not words:
            continue  # "python -m bot" on its own
        path_words: list[str] = []
        for word in words:
            word = word.rstrip(",.;:)")
            bare = word.strip("[]")
            if bare.startswith("-"):
                option = bare.split("=")[0]
                if option not in cli_help(*path_words):
                    problems.append(f"{' '.join(path_words)} has no option {option}")
                continue
            choices = subcommands(*path_words)
            if choices and bare == word:
                if bare not in choices:
                    problems.append(f"`python -m bot {' '.join([*path_words, bare])}`: "
                                    f"no such command (choices: {sorted(choices)})")
                    break
                path_words.append(bare)
    assert not problems, f"{doc_id(path)}: " + "; ".join(problems)


def defined_metrics() -> set[str]:
    return set(re.findall(r"\"(slackbot_[a-z0-9_]+)\"", read(ROOT / "bot" / "metrics.py")))


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_metric_names_in_the_docs_exist(path: Path) -> None:
    metrics = defined_metrics()
    named = set(re.findall(r"\bslackbot_[a-z0-9_]+", read(path)))
    unknown = {
        name for name in named
        if name not in metrics and re.sub(r"_(bucket|sum|count)$", "", name) not in metrics
    }
    assert not unknown, f"{doc_id(path)} names metrics bot/metrics.py does not define: {unknown}"


def test_operations_lists_every_metric() -> None:
    text = read(ROOT / "docs" / "operations.md")
    missing = sorted(name for name in defined_metrics() if f"`{name}" not in text)
    assert not missing, f"docs/operations.md does not list these metrics: {missing}"

"""The import rule of docs/development.md, checked on the source: imports point down
(entry → intake → conversation → {adk, store, thread io} → shared leaves), the conversation
does not know Slack, and the settings import nothing heavy. A new module fails
`test_every_module_has_a_layer` until it is given its layer here (and in the docs)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOT = ROOT / "bot"

ENTRY, INTAKE, CONVERSATION, ADK, STORE, THREAD_IO, LEAF = (
    "entry", "intake", "conversation", "adk", "store", "thread io", "shared leaf")

# Each module's layer. A package listed as "bot.adk" covers its modules.
LAYERS: dict[str, str] = {
    "bot.__main__": ENTRY, "bot.app": ENTRY, "bot.server": ENTRY, "bot.socket_mode": ENTRY,
    "bot.readiness": ENTRY, "bot.runtime": ENTRY, "bot.console": ENTRY,
    "bot.settings_docs": ENTRY, "bot.cli": ENTRY, "bot.slack.assistant": ENTRY,
    "bot.slack.controls": ENTRY, "bot.slack.feedback": ENTRY, "bot.slack.scopes": ENTRY,
    "bot.slack.uninstall": ENTRY, "bot.slack.install_page": ENTRY,
    "bot.slack.authorize_cache": ENTRY, "bot.evals": ENTRY,

    "bot.intake": INTAKE, "bot.worker": INTAKE, "bot.notes": INTAKE,
    "bot.slack.routing": INTAKE,

    "bot.conversation": CONVERSATION, "bot.turn_gate": CONVERSATION,
    "bot.thread_sessions": CONVERSATION, "bot.agent_run": CONVERSATION,
    "bot.turn_replies": CONVERSATION, "bot.delivery": CONVERSATION,
    "bot.approvals": CONVERSATION, "bot.artifacts": CONVERSATION,

    "bot.adk": ADK,
    "bot.store": STORE, "bot.stops": STORE,
    "bot.slack": THREAD_IO, "bot.terminal_text": THREAD_IO,
    # pure: the note form a 👎 opens, its submission read back (bot.slack.feedback uses it)
    "bot.slack.feedback_modal": THREAD_IO,

    "bot.thread_io": LEAF, "bot.message_text": LEAF, "bot.turns": LEAF, "bot.config": LEAF,
    "bot.access": LEAF, "bot.control_access": LEAF, "bot.limits": LEAF, "bot.progress": LEAF,
    "bot.metrics": LEAF, "bot.logs": LEAF, "bot.ttl_cache": LEAF, "bot.memory_budget": LEAF,
    "bot.followup": LEAF, "bot.file_types": LEAF, "bot.usage": LEAF,
}

# What each layer may import (its own layer always).
MAY_IMPORT: dict[str, set[str]] = {
    ENTRY: {INTAKE, CONVERSATION, ADK, STORE, THREAD_IO, LEAF},
    INTAKE: {CONVERSATION, ADK, STORE, THREAD_IO, LEAF},
    CONVERSATION: {ADK, STORE, THREAD_IO, LEAF},
    ADK: {LEAF},
    STORE: {LEAF},
    THREAD_IO: {STORE, LEAF},  # the Slack thread io keeps its stream budget in Redis
    LEAF: set(),
}
# The intake and the worker reach the conversation only through callables runtime.py
# hands them.
NEVER: dict[str, set[str]] = {INTAKE: {CONVERSATION}}

# Pairs (importer, imported) that break the rule, each with its reason in
# docs/development.md ("Known exceptions"). Do not add to it.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

SLACK_LIBRARIES = ("slack_sdk", "slack_bolt")
# What the settings may import besides the standard library and the shared leaves.
CONFIG_MAY_IMPORT = ("pydantic", "pydantic_settings")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(BOT.rglob("*.py"))}


def layer_of(name: str) -> str | None:
    """The layer of a module: its own entry, or the closest package's."""
    parts = name.split(".")
    while parts:
        layer = LAYERS.get(".".join(parts))
        if layer is not None:
            return layer
        parts.pop()
    return None


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports, inside `if TYPE_CHECKING:` and functions too. A name
    imported from a package is taken as a module when the package has one by that name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = modules()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in known)
    return found


def bot_imports(path: Path) -> set[str]:
    return {name for name in imports_of(path) if name == "bot" or name.startswith("bot.")}


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if name != "bot" and layer_of(name) is None] == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down(name: str) -> None:
    layer = layer_of(name)
    if layer is None:
        return  # the package `bot` itself
    wrong = []
    for imported in sorted(bot_imports(modules()[name])):
        target = layer_of(imported)
        if target is None or (name, imported) in KNOWN_EXCEPTIONS:
            continue
        if target != layer and (target not in MAY_IMPORT[layer]
                                or target in NEVER.get(layer, set())):
            wrong.append(f"{imported} ({target})")
    assert wrong == [], f"{name} ({layer}) imports {wrong}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if layer_of(n) == CONVERSATION))
def test_the_conversation_does_not_know_slack(name: str) -> None:
    slack = [i for i in imports_of(modules()[name])
             if i.split(".")[0] in SLACK_LIBRARIES or i.startswith("bot.slack")]
    assert slack == [], f"{name} imports {slack}"


@pytest.mark.parametrize("name", ["bot.console", *sorted(
    n for n in modules() if n.startswith("bot.slack."))])
def test_the_thread_ios_do_not_import_the_conversation(name: str) -> None:
    conversation = [i for i in bot_imports(modules()[name]) if layer_of(i) == CONVERSATION]
    assert conversation == [], f"{name} imports {conversation}"


def test_the_settings_import_nothing_heavy() -> None:
    heavy = [i for i in imports_of(BOT / "config.py")
             if i.split(".")[0] not in (*sys.stdlib_module_names, *CONFIG_MAY_IMPORT, "bot")
             or (i.startswith("bot.") and layer_of(i) != LEAF)]
    assert heavy == []


def test_a_wrong_import_is_caught(tmp_path: Path) -> None:
    """The check itself: a leaf importing the conversation is found."""
    source = tmp_path / "leaf.py"
    source.write_text("from bot.conversation import Conversation\nimport bot.turns\n")
    assert bot_imports(source) == {"bot.conversation", "bot.turns"}
    assert layer_of("bot.conversation") == CONVERSATION
    assert CONVERSATION not in MAY_IMPORT[LEAF]

"""Every setting is documented where an operator looks for it."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert listed == setting_names()
    assert "xoxb-your-bot-token" in text and not re.search(r"xox[abp]-\d{6,}", text)


def test_the_configuration_page_documents_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert setting_names() <= documented


def test_the_readme_is_short_and_gives_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make test" in text and "make demo" in text
    assert "(docs/configuration.md)" in text


def project_map() -> list[str]:
    """The paths named in docs/architecture.md's project map (a tree: folders end in `/`,
    descriptions start at the same column, their continuation lines further right)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("\n## Project map\n", 1)[1]
    block = block[block.index("```") + 3:]
    block = block[block.index("\n") + 1:block.index("```")]
    paths: list[str] = []
    folders: list[tuple[int, str]] = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match or len(match.group(1)) >= 20:
            continue  # a blank line, or a description's continuation
        indent, name = len(match.group(1)), match.group(2)
        while folders and folders[-1][0] >= indent:
            folders.pop()
        path = "/".join([folder for _, folder in folders] + [name.rstrip("/")])
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
        paths.append(path)
    return paths


def test_the_project_map_names_every_module_of_the_bot_once() -> None:
    named = [path for path in project_map() if path.startswith("bot/") and path.endswith(".py")]
    modules = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "bot").rglob("*.py")
        if path.name != "__init__.py" or path.read_text().strip()
    )
    assert sorted(set(named)) == sorted(named), "a module is named twice"
    assert sorted(named) == modules, (
        f"docs/architecture.md's project map lacks {sorted(set(modules) - set(named))} and "
        f"names {sorted(set(named) - set(modules))}, which are not modules of the bot")
    missing = [path for path in project_map() if not (ROOT / path).exists()]
    assert not missing, f"the project map names paths that do not exist: {missing}"

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


def test_readme_documents_every_setting_and_the_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert setting_names() <= documented
    assert "make test" in text and "make demo" in text

"""docs/configuration.md and .env.example are what `make docs` generates from `Settings`, so a
setting without documentation, or a page that no longer matches the code, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from bot.config import SETTINGS_GROUPS, Settings, group
from bot.settings_docs import (
    GENERATED,
    UNCOMMENTED,
    configuration_markdown,
    env_example,
    main,
    setting_docs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(GENERATED))
def test_the_generated_files_are_current(relative: str) -> None:
    text = (ROOT / relative).read_text(encoding="utf-8")
    assert text == GENERATED[relative](Settings), (
        f"{relative} is not what bot/config.py generates: run `make docs` "
        "(python -m bot.settings_docs) and commit the result"
    )


def test_the_check_mode_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--root", str(ROOT)]) == 0
    assert capsys.readouterr().err == ""


def test_the_check_mode_names_a_stale_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text(configuration_markdown(Settings))
    (tmp_path / ".env.example").write_text("# SLACK_BOT_TOKEN=\n")
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "not current: .env.example; run `make docs`\n"
    assert (tmp_path / ".env.example").read_text() == "# SLACK_BOT_TOKEN=\n"
    assert main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / ".env.example").read_text() == env_example(Settings)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_description_and_a_group(name: str) -> None:
    info = Settings.model_fields[name]
    assert info.description and len(info.description.split()) >= 3, f"{name}: no description"
    assert isinstance(info.json_schema_extra, dict), f"{name}: no json_schema_extra=group(...)"
    assert info.json_schema_extra.get("group") in SETTINGS_GROUPS, name


def test_a_setting_without_a_description_or_group_cannot_be_documented() -> None:
    class Undocumented(BaseSettings):
        shiny_new_setting: int = 3

    class Ungrouped(BaseSettings):
        shiny_new_setting: int = Field(default=3, description="A new setting.")

    class Misgrouped(BaseSettings):
        shiny_new_setting: int = Field(default=3, description="A new setting.",
                                       json_schema_extra=group("Nowhere"))

    with pytest.raises(ValueError, match="SHINY_NEW_SETTING: no group"):
        setting_docs(Undocumented)
    with pytest.raises(ValueError, match="SHINY_NEW_SETTING: no group"):
        setting_docs(Ungrouped)
    with pytest.raises(ValueError, match="SHINY_NEW_SETTING: no group"):
        setting_docs(Misgrouped)

    class Blank(BaseSettings):
        shiny_new_setting: int = Field(default=3, json_schema_extra=group("Slack"))

    with pytest.raises(ValueError, match="SHINY_NEW_SETTING: no description"):
        setting_docs(Blank)


def test_defaults_are_rendered_from_the_model_and_secrets_are_unset() -> None:
    class Sample(BaseSettings):
        api_token: SecretStr | None = Field(
            default=SecretStr("xoxb-must-not-show"), description="A secret.",
            json_schema_extra=group("Slack"))
        buffer_bytes: int = Field(default=2 * 1024 * 1024, description="A size.",
                                  json_schema_extra=group("HTTP"))
        enabled: bool = Field(default=False, description="A switch.",
                              json_schema_extra=group("Slack"))
        names: list[str] = Field(default_factory=list, description="A list.",
                                 examples=["C1,C2"], json_schema_extra=group("Slack"))
        pairs: list[tuple[str, str]] = Field(default_factory=lambda: [("a", "b"), ("c", "d")],
                                             description="Pairs.",
                                             json_schema_extra=group("Slack"))
        policies: dict[str, str] = Field(default_factory=lambda: {"C1": "starter"},
                                         description="A mapping.",
                                         json_schema_extra=group("Slack"))

    page = configuration_markdown(Sample)
    env = env_example(Sample)
    assert "xoxb-must-not-show" not in page + env
    assert "| `API_TOKEN` | unset | A secret. |" in page
    assert "| `BUFFER_BYTES` | `2097152` (2 MiB) | A size. |" in page
    assert "| `ENABLED` | `false` | A switch. |" in page
    assert "| `NAMES` | empty | A list. |" in page
    assert "| `PAIRS` | `a=b;c=d` | Pairs. |" in page
    assert '| `POLICIES` | `{"C1": "starter"}` | A mapping. |' in page
    # Sections in the order of SETTINGS_GROUPS, fields in the model's order within each.
    assert page.index("## Slack") < page.index("`ENABLED`") < page.index("`PAIRS`") < page.index(
        "## HTTP") < page.index("`BUFFER_BYTES`")
    assert "# A list.\n# Default: empty\n# NAMES=C1,C2\n" in env
    assert "# A size.\n# Default: 2097152 (2 MiB)\n# BUFFER_BYTES=2097152\n" in env


def test_env_example_wraps_descriptions_and_keeps_the_lines_to_fill_in_uncommented() -> None:
    text = env_example(Settings)
    for line in text.splitlines():
        value_line = re.match(r"^# (Default: |[A-Z][A-Z0-9_]+=)", line)
        if line.startswith("# ") and not value_line:
            assert len(line) <= 100 or " " not in line[2:], line
    uncommented = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", text, re.MULTILINE))
    assert uncommented == {
        "SLACK_BOT_TOKEN": "xoxb-your-bot-token",
        "ADK_BASE_URL": "http://localhost:8000",
        "ADK_APP_NAME": "finops_cost_data_analyst",
    }
    assert {name.upper() for name in UNCOMMENTED} == set(uncommented)
    assert "Commented-out lines show the default value." in text.splitlines()[2]


def test_every_value_env_example_shows_is_valid() -> None:
    shown = dict(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=(.*)$", env_example(Settings),
                            re.MULTILINE))
    assert set(shown) == {name.upper() for name in Settings.model_fields}
    values = {name.lower(): value for name, value in shown.items() if value}
    Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_reference_lists_every_setting_once_under_its_group() -> None:
    page = configuration_markdown(Settings)
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", page, re.MULTILINE)
    assert sorted(rows) == sorted(name.upper() for name in Settings.model_fields)
    headings = re.findall(r"^## (.+)$", page, re.MULTILINE)
    assert headings == list(SETTINGS_GROUPS)

"""The type checker that `make lint` runs is strict enough to catch the mistakes it is there
for: a keyword argument a function does not take, and a wrong return type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = '''
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessPolicy
from bot.slack.usergroups import UserGroupResolver


def resolver(client: AsyncWebClient, policy: AccessPolicy) -> UserGroupResolver:
    return UserGroupResolver.for_policy(client, policy, ttl=300.0)


def count() -> int:
    return "three"


def untyped(value):
    return value
'''


def test_the_project_config_catches_wrong_keywords_and_return_types(tmp_path: Path) -> None:
    module = tmp_path / "typecheck_probe.py"
    module.write_text(SNIPPET)
    out, err, status = mypy_api.run([
        "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(tmp_path / "cache"),
        str(module),
    ])
    assert status == 1, (out, err)
    codes = re.findall(r"typecheck_probe\.py:(\d+): error: .*\[([a-z-]+)\]$", out, re.M)
    assert sorted(codes) == sorted([("9", "call-arg"), ("13", "return-value"),
                                    ("16", "no-untyped-def")]), out

"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.adk_server import AdkServer


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk and aiohttp pick up proxy variables even for loopback URLs; every peer of a
    unit test is on loopback."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def adk_server() -> Iterator[AdkServer]:
    """A real `adk api_server` with the test agent and in-memory sessions, one per module."""
    server = AdkServer(memory=True)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.cleanup()

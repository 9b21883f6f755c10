"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.adk_server import AdkServer


@pytest.fixture(scope="module")
def adk_server() -> Iterator[AdkServer]:
    """A real `adk api_server` with the test agent and in-memory sessions, one per module."""
    server = AdkServer(memory=True)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.cleanup()

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess


@pytest.fixture(scope="module")
def adk() -> Iterator[AdkServer]:
    """A real `adk api_server` with the deterministic test agent (in-memory sessions)."""
    server = AdkServer(memory=True)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    fake.add_user("U1", "alice", real_name="Alice Adams", display_name="Alice")
    fake.add_user("U2", "bob", real_name="Bob Brown", display_name="Bob")
    fake.add_channel("C1", "finops")
    fake.add_channel("G1", "secret-budget", is_private=True)
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> AsyncIterator[BotProcess]:
    process = BotProcess(slack, adk.base_url, prefix=prefix)
    await process.start()
    yield process
    await process.close()


@pytest.fixture
async def people(slack: FakeSlack) -> FakeSlack:
    """The fake Slack with user groups (S1: Alice, S2: Bob) and a second public channel."""
    slack.add_usergroup("S1", ["U1"])
    slack.add_usergroup("S2", ["U2"])
    slack.add_channel("C2", "budgets")
    return slack

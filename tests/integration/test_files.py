"""bot/artifacts.py and bot/slack/files.py against a real `adk api_server` (test agent)
and the fake Slack Web API:
artifacts fetched from a real turn and uploaded into Slack, and ADK taking a message with
file parts. What needs no ADK (file parts, downloads, sizes, memory) is in
tests/unit/test_files.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.adk.client import AdkClient
from bot.adk.events import TurnResult
from bot.artifacts import fetch_artifacts
from bot.file_types import MB
from bot.slack.files import message_parts_for_files, upload_attachments
from bot.thread_io import Attachment
from tests.adk_agents.test_agent.agent import (
    ARTIFACT_CSV,
    ARTIFACT_NAME,
    CHART_NAME,
    CHART_PNG,
    TEXT_ARTIFACT,
    TEXT_ARTIFACT_NAME,
)
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.settings import adk_client
from tests.unit.test_files import ALLOWED, unpack, web_client


@pytest.fixture
async def adk(adk_server: AdkServer) -> AsyncIterator[AdkClient]:
    """The bot's ADK client on the module's `adk api_server` (here `adk` is the client, not
    the server the conftest's `adk` names)."""
    client = adk_client(adk_server.base_url, "test_agent")
    yield client
    await client.aclose()


async def run_turn(adk: AdkClient, session: str, text: str) -> TurnResult:
    await adk.create_session("u1", session)
    result = TurnResult()
    async for event in adk.run_sse("u1", session, text):
        result.feed(event)
    return result


# ---- artifacts: ADK -> Slack -------------------------------------------------------------------


async def test_fetch_artifacts_from_a_real_turn(adk: AdkClient) -> None:
    result = await run_turn(adk, "files-1", "artifact chart textartifact")
    assert result.artifacts == {ARTIFACT_NAME: 0, CHART_NAME: 0, TEXT_ARTIFACT_NAME: 0}

    attachments, notes = await fetch_artifacts(
        adk, "u1", "files-1", result.artifacts, max_bytes=10 * MB
    )
    assert notes == []
    by_name = {a.filename: a for a in attachments}
    assert [a.filename for a in attachments] == list(result.artifacts)
    assert by_name[ARTIFACT_NAME] == Attachment(
        ARTIFACT_NAME, ARTIFACT_CSV, ARTIFACT_NAME, "text/csv"
    )
    assert by_name[CHART_NAME] == Attachment(CHART_NAME, CHART_PNG, CHART_NAME, "image/png")
    assert by_name[CHART_NAME].content.startswith(b"\x89PNG\r\n\x1a\n")
    assert by_name[TEXT_ARTIFACT_NAME].content == TEXT_ARTIFACT.encode()
    assert by_name[TEXT_ARTIFACT_NAME].mimetype == "text/plain"


async def test_fetch_artifacts_caps_size_and_survives_missing_ones(adk: AdkClient) -> None:
    result = await run_turn(adk, "files-2", "artifact chart")
    wanted = {**result.artifacts, "gone.csv": 0, ARTIFACT_NAME: 7}  # v7 does not exist
    attachments, notes = await fetch_artifacts(
        adk, "u1", "files-2", wanted, max_bytes=len(ARTIFACT_CSV)
    )
    assert attachments == []
    assert notes == [
        f"`{ARTIFACT_NAME}` could not be fetched from the agent",
        f"`{CHART_NAME}` was too large to upload ({len(CHART_PNG)} bytes > "
        f"{len(ARTIFACT_CSV)} bytes)",
        "`gone.csv` could not be fetched from the agent",
    ]
    attachments, notes = await fetch_artifacts(
        adk, "u1", "files-2", {ARTIFACT_NAME: 0, CHART_NAME: 0}, max_bytes=len(ARTIFACT_CSV)
    )
    assert [a.filename for a in attachments] == [ARTIFACT_NAME]
    assert notes == [
        f"`{CHART_NAME}` was too large to upload ({len(CHART_PNG)} bytes > "
        f"{len(ARTIFACT_CSV)} bytes)"
    ]


async def test_artifacts_end_to_end_into_a_dm(adk: AdkClient, slack: FakeSlack) -> None:
    result = await run_turn(adk, "files-3", "chart")
    attachments, notes = await fetch_artifacts(
        adk, "u1", "files-3", result.artifacts, max_bytes=10 * MB
    )
    await upload_attachments(web_client(slack), channel="D1", thread_ts=None,
                             attachments=attachments)
    [f] = slack.uploaded_files
    assert (f.filename, f.channel_id, f.thread_ts, f.content) == (CHART_NAME, "D1", None, CHART_PNG)
    assert notes == []


# ---- user files: Slack -> ADK ------------------------------------------------------------------


async def test_adk_accepts_a_message_with_file_parts(
    adk_server: AdkServer, slack: FakeSlack
) -> None:
    csv = slack.add_file("F1", "costs.csv", "text/csv", ARTIFACT_CSV)
    png = slack.add_file("F2", "chart.png", "image/png", CHART_PNG)
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [csv, png], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED
    ))
    assert notes == []
    async with httpx.AsyncClient(
        base_url=adk_server.base_url, trust_env=False, timeout=30
    ) as http:
        r = await http.post("/apps/test_agent/users/u1/sessions", json={"sessionId": "files-4"})
        assert r.status_code == 200, r.text
        body = {
            "appName": "test_agent",
            "userId": "u1",
            "sessionId": "files-4",
            "newMessage": {"role": "user", "parts": [{"text": "Alice: what is in these?"}, *parts]},
        }
        r = await http.post("/run", json=body)
        assert r.status_code == 200, r.text
    final = r.json()[-1]["content"]["parts"][0]["text"]
    assert "said=Alice: what is in these?" in final
    assert f"part: text/csv {len(ARTIFACT_CSV)} bytes" in final
    assert f"part: image/png {len(CHART_PNG)} bytes" in final

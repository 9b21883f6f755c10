"""bot/artifacts.py and bot/slack/files.py against the fake Slack Web API and a loopback
stand-in for ADK's artifact
endpoints. Artifacts from a real turn of a real `adk api_server` are in
tests/integration/test_files.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.adk.client import AdkClient
from bot.artifacts import fetch_artifacts
from bot.config import Settings
from bot.file_types import MB, human_size
from bot.memory_budget import MEMORY_PER_FILE_BYTE, MemoryBudget
from bot.slack.files import (
    file_mimetype,
    message_parts_for_files,
    parse_mimetypes,
    upload_attachments,
    upload_filename,
)
from bot.thread_io import Attachment, FileParts
from bot.turn_replies import notes_text
from tests.adk_agents.test_agent.agent import (
    ARTIFACT_CSV,
    CHART_PNG,
)
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.http_stub import serving
from tests.settings import adk_client

TOKEN = "xoxb-test-token"
ALLOWED = frozenset({"text/csv", "text/plain", "application/json", "image/png", "image/jpeg",
                     "image/gif", "image/webp", "application/pdf"})  # ATTACHMENT_MIMETYPES
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
XLSX = b"PK\x03\x04" + b"\x00" * 60
LONG_WAIT = 30.0  # a wait for memory that never runs out in these tests


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def web_client(slack: FakeSlack, token: str = TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=slack.base_url)


@asynccontextmanager
async def stub_adk(parts: dict[str, Any]) -> AsyncIterator[AdkClient]:
    """A real AdkClient against a loopback server whose artifact GETs answer from ``parts``
    (name -> JSON or HTTP status)."""

    async def handler(request: web.Request) -> web.Response:
        name = request.path.split("/artifacts/")[1].split("/versions/")[0]
        answer = parts.get(name, 404)
        if isinstance(answer, int):
            return web.json_response({"detail": "Artifact not found"}, status=answer)
        return web.json_response(answer)

    async with serving(handler) as url:
        client = adk_client(url, "test_agent")
        try:
            yield client
        finally:
            await client.aclose()


# ---- helpers ---------------------------------------------------------------------------------


def test_human_size_and_notes() -> None:
    assert human_size(int(12.3 * MB)) == "12.3 MB"
    assert human_size(10 * MB) == "10 MB"
    assert human_size(2048) == "2 KB"
    assert human_size(300) == "300 bytes"
    assert notes_text([]) == ""
    assert notes_text(["a.csv is empty"]) == ":paperclip: a.csv is empty."
    assert notes_text(["a", "b"]) == ":paperclip: • a\n• b"


def test_settings_defaults_match_the_module() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_upload_bytes == 10 * MB
    assert settings.max_attachment_bytes == 5 * MB
    assert settings.max_attachments == 5
    assert parse_mimetypes(settings.attachment_mimetypes) == ALLOWED
    assert parse_mimetypes(" Text/CSV , image/jpg,,") == {"text/csv", "image/jpeg"}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ({"name": "a.csv", "mimetype": "text/csv", "filetype": "csv"}, "text/csv"),
        ({"name": "a.csv", "mimetype": "application/vnd.ms-excel", "filetype": "csv"}, "text/csv"),
        ({"name": "a.csv", "mimetype": "application/vnd.ms-excel"}, "text/csv"),
        ({"name": "export", "mimetype": "", "filetype": "csv"}, "text/csv"),
        ({"name": "a.csv", "mimetype": "text/plain", "filetype": "text"}, "text/csv"),
        ({"name": "old.xls", "mimetype": "application/vnd.ms-excel", "filetype": "xls"},
         "application/vnd.ms-excel"),
        ({"name": "p.JPG", "mimetype": "image/jpg", "filetype": "jpg"}, "image/jpeg"),
        ({"name": "r.pdf", "mimetype": "application/octet-stream"}, "application/pdf"),
        ({"name": "n.txt", "mimetype": "text/plain; charset=utf-8"}, "text/plain"),
    ],
)
def test_file_mimetype_normalises_slack_labels(file: dict[str, str], expected: str) -> None:
    assert file_mimetype(file) == expected


@pytest.mark.parametrize(
    ("filename", "mimetype", "expected"),
    [
        ("cost_chart", "image/png", "cost_chart.png"),
        ("cost_chart.png", "image/png", "cost_chart.png"),
        ("photo.JPEG", "image/jpeg", "photo.JPEG"),
        ("chart.v2", "image/png", "chart.v2.png"),
        ("report", "text/csv", "report.csv"),
        ("report.v2", "text/csv", "report.v2"),
        ("blob", "application/x-unknown-thing", "blob"),
    ],
)
def test_upload_filename(filename: str, mimetype: str, expected: str) -> None:
    attachment = Attachment(filename=filename, content=b"x", title=filename, mimetype=mimetype)
    assert upload_filename(attachment) == expected


# ---- artifacts: ADK -> Slack -------------------------------------------------------------------


async def test_fetch_artifacts_odd_parts() -> None:
    png = base64.urlsafe_b64encode(CHART_PNG).decode().rstrip("=")
    parts = {
        "user:charts/q3.png": {"inlineData": {"data": png, "mimeType": "image/png"}},
        "link.csv": {"fileData": {"fileUri": "gs://bucket/x.csv", "mimeType": "text/csv"}},
        "broken.csv": {"inlineData": {"data": "!!not base64!!", "mimeType": "text/csv"}},
        "empty.csv": {"inlineData": {"data": "", "mimeType": "text/csv"}},
        "nothing": {},
        "untyped.csv": {"inlineData": {"data": base64.b64encode(b"a,b\n").decode()}},
        "big.png": {"inlineData": {"data": base64.b64encode(b"x" * int(12.3 * MB)).decode(),
                                   "mimeType": "image/png"}},
        "server-error.png": 500,
    }
    async with stub_adk(parts) as adk:
        attachments, notes = await fetch_artifacts(
            adk, "u1", "s1",
            {"user:charts/q3.png": 0, "link.csv": 0, "broken.csv": 0, "empty.csv": 0,
             "nothing": 1, "untyped.csv": 0, "big.png": 0, "server-error.png": 0},
            max_bytes=10 * MB,
        )
    assert attachments == [
        Attachment("q3.png", CHART_PNG, "q3.png", "image/png"),
        Attachment("untyped.csv", b"a,b\n", "untyped.csv", "text/csv"),
    ]
    assert notes == [
        "`link.csv` is stored outside the agent (a file link), so it was not uploaded",
        "`broken.csv` could not be read, so it was not uploaded",
        "`empty.csv` is empty, so it was not uploaded",
        "`nothing` has no content, so it was not uploaded",
        "`big.png` was too large to upload (12.3 MB > 10 MB)",
        "`server-error.png` could not be fetched from the agent",
    ]


async def test_fetch_artifacts_refuses_names_outside_the_session() -> None:
    """Names the agent gave that would point the ADK URL elsewhere are never requested; the
    note names each, as written."""
    requested: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        requested.append(request.raw_path)
        return web.json_response({"text": "fine"})

    wanted = {"../../etc/passwd": 0, "/x": 0, "a\\..\\..\\b": 0, "": 0, "bad\nname": 0,
              "ok.txt": 0}
    async with serving(handler) as url:
        adk = adk_client(url, "test_agent")
        try:
            attachments, notes = await fetch_artifacts(adk, "u1", "s1", wanted, max_bytes=MB)
        finally:
            await adk.aclose()
    assert requested == ["/apps/test_agent/users/u1/sessions/s1/artifacts/ok.txt/versions/0"]
    assert [a.filename for a in attachments] == ["ok.txt"]
    assert notes == [
        "`../../etc/passwd` was not uploaded: its name is not a safe file name",
        "`/x` was not uploaded: its name is not a safe file name",
        "`a\\..\\..\\b` was not uploaded: its name is not a safe file name",
        "(no name) was not uploaded: its name is not a safe file name",
        "`bad name` was not uploaded: its name is not a safe file name",
    ]


async def test_upload_attachments_into_the_thread(slack: FakeSlack) -> None:
    client = web_client(slack)
    attachments = [
        Attachment("cost_report.csv", ARTIFACT_CSV, "cost_report.csv", "text/csv"),
        Attachment("cost_chart", CHART_PNG, "Cost chart", "image/png"),
    ]
    await upload_attachments(client, channel="C1", thread_ts="1700000000.000100",
                             attachments=attachments)
    uploaded = slack.uploaded_files
    assert [(f.filename, f.title, f.channel_id, f.thread_ts, f.content) for f in uploaded] == [
        ("cost_report.csv", "cost_report.csv", "C1", "1700000000.000100", ARTIFACT_CSV),
        ("cost_chart.png", "Cost chart", "C1", "1700000000.000100", CHART_PNG),
    ]
    assert uploaded[1].alt_txt == "Cost chart"
    assert len(slack.calls_to("files.completeUploadExternal")) == 1  # one call per turn
    [share] = slack.bot_replies("C1", "1700000000.000100")
    assert [f["name"] for f in share["files"]] == ["cost_report.csv", "cost_chart.png"]


async def test_upload_nothing_makes_no_call(slack: FakeSlack) -> None:
    await upload_attachments(web_client(slack), channel="C1", thread_ts=None, attachments=[])
    assert slack.calls == []


# ---- user files: Slack -> ADK ------------------------------------------------------------------


def unpack(files: FileParts) -> tuple[list[dict[str, Any]], list[str]]:
    return files.parts, files.notes


def inline(part: dict[str, Any]) -> tuple[str, bytes]:
    return part["inlineData"]["mimeType"], base64.b64decode(part["inlineData"]["data"])


async def test_message_parts_for_files(slack: FakeSlack) -> None:
    csv = slack.add_file("F1", "costs.csv", "application/vnd.ms-excel", ARTIFACT_CSV,
                         filetype="csv")
    png = slack.add_file("F2", "chart.png", "image/png", CHART_PNG)
    pdf = slack.add_file("F3", "invoice.pdf", "application/pdf", PDF)
    xlsx = slack.add_file(
        "F4", "report.xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", XLSX,
    )
    big = slack.add_file("F5", "big.csv", "text/csv", b"a,b\n" * 2000)

    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [csv, png, pdf, xlsx, big],
        max_bytes=4096, max_files=5, allowed_mimetypes=ALLOWED,
    ))
    # Each file's data comes right after a text part naming it.
    assert parts[0] == {"text": "\n(attached file: costs.csv, text/csv)"}
    labels = [p["text"] for p in parts if "text" in p]
    assert labels[1] == "\n(attached file: chart.png, image/png)"
    assert [inline(p) for p in parts if "inlineData" in p] == [
        ("text/csv", ARTIFACT_CSV), ("image/png", CHART_PNG), ("application/pdf", PDF),
    ]
    assert notes == [
        "`report.xlsx`: this file type isn't supported",
        "`big.csv` is larger than the 4 KB limit",
    ]
    downloads = slack.calls_to("download")
    assert sorted(c.params["file_id"] for c in downloads) == ["F1", "F2", "F3"]  # not F5
    assert all(c.headers["Authorization"] == f"Bearer {TOKEN}" for c in downloads)
    assert all("/download/" in c.params["path"] for c in downloads)


async def test_size_is_enforced_while_streaming(slack: FakeSlack) -> None:
    liar = slack.add_file("F1", "liar.csv", "text/csv", b"x" * (3 * 65536), size=10)
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [liar], max_bytes=65536, max_files=5, allowed_mimetypes=ALLOWED
    ))
    assert parts == []
    assert notes == ["`liar.csv` is larger than the 64 KB limit"]
    assert len(slack.calls_to("download")) == 1


async def test_max_files_and_url_private_fallback(slack: FakeSlack) -> None:
    files = [slack.add_file(f"F{i}", f"n{i}.txt", "text/plain", f"note {i}".encode())
             for i in range(4)]
    del files[0]["url_private_download"]  # only url_private: still downloadable
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), files, max_bytes=MB, max_files=2, allowed_mimetypes=ALLOWED
    ))
    assert [inline(p) for p in parts if "inlineData" in p] == [
        ("text/plain", b"note 0"), ("text/plain", b"note 1")]
    assert notes == [
        "`n2.txt` was not passed on (at most 2 files per message)",
        "`n3.txt` was not passed on (at most 2 files per message)",
    ]


async def test_wrong_token_is_refused_like_slack(slack: FakeSlack) -> None:
    f = slack.add_file("F1", "costs.csv", "text/csv", ARTIFACT_CSV)
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack, "xoxb-wrong-token"), [f],
        max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
    ))
    assert parts == []
    assert notes == ["`costs.csv` couldn't be downloaded from Slack"]
    [call] = slack.calls_to("download")
    assert call.status == 302  # to the sign-in page, as files.slack.com does

    # The fake itself: no token at all gets the HTML sign-in page too.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=True) as http:
        response = await http.get(f["url_private_download"])
    assert response.headers["content-type"].startswith("text/html")
    assert b"Sign in" in response.content


async def test_failures_and_foreign_hosts_become_notes(slack: FakeSlack) -> None:
    ok = slack.add_file("F1", "a.csv", "text/csv", b"a\n1\n")
    flaky = slack.add_file("F2", "b.csv", "text/csv", b"b\n2\n")
    foreign = {**slack.add_file("F3", "c.csv", "text/csv", b"c\n"),
               "url_private_download": "https://evil.example/c.csv",
               "url_private": "https://evil.example/c.csv"}
    no_url = {"id": "F4", "name": "d.pdf", "mimetype": "application/pdf", "size": 10}
    empty = slack.add_file("F5", "e.txt", "text/plain", b"")
    slack.fail_next("download", status=500)
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [flaky], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED
    ))
    assert (parts, notes) == ([], ["`b.csv` couldn't be downloaded from Slack"])
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [ok, foreign, no_url, empty],
        max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
    ))
    assert [inline(p) for p in parts if "inlineData" in p] == [("text/csv", b"a\n1\n")]
    assert notes == [
        "`c.csv` couldn't be read from Slack",
        "`d.pdf` couldn't be read from Slack",
        "`e.txt` is empty",
    ]
    assert "evil" not in json.dumps([c.params for c in slack.calls])


async def test_no_files_no_requests(slack: FakeSlack) -> None:
    assert unpack(await message_parts_for_files(
        web_client(slack), [], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED
    )) == ([], [])
    assert slack.calls == []


# ---- the memory attached files take (MAX_ATTACHMENT_MEMORY_BYTES) ---------------------------


async def test_a_file_larger_than_slack_said_is_cut_off(slack: FakeSlack) -> None:
    liar = slack.add_file("F1", "liar.csv", "text/csv", b"x" * 1000, size=10)
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [liar], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED
    ))
    assert parts == []
    assert notes == ["`liar.csv` was larger than Slack said (10 bytes), so it was not passed on"]


async def test_a_streamed_file_is_never_read_past_its_size() -> None:
    """No Content-Length (chunked): the download stops once it has the bytes Slack said
    the file has, instead of buffering whatever comes."""
    chunk, chunks = b"x" * 65536, 1000  # 62.5 MB on offer
    written: list[int] = []  # bytes the server got out, per download

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        written.append(0)
        try:
            for _ in range(chunks):
                await response.write(chunk)
                written[-1] += len(chunk)
        except (ConnectionResetError, RuntimeError):  # the client hung up
            pass
        return response

    async with serving(handler) as url:
        client = AsyncWebClient(token=TOKEN, base_url=f"{url}/api/")
        big = {"id": "F1", "name": "big.csv", "mimetype": "text/csv", "size": 100_000,
               "url_private_download": f"{url}/files-pri/T1-F1/download/big.csv"}
        parts, notes = unpack(await message_parts_for_files(
            client, [big], max_bytes=10 * MB, max_files=5, allowed_mimetypes=ALLOWED))
        unsized = {k: v for k, v in big.items() if k != "size"}  # cut at the limit
        parts2, notes2 = unpack(await message_parts_for_files(
            client, [unsized], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED))
    assert parts == [] and parts2 == []
    assert notes == ["`big.csv` was larger than Slack said (97.7 KB), so it was not passed on"]
    assert notes2 == ["`big.csv` is larger than the 1 MB limit"]
    # The server was cut off both times, long before the end (what it got out is what the
    # sockets buffer, not what the bot kept).
    assert len(written) == 2 and all(n < chunks * len(chunk) / 4 for n in written), written


async def test_files_reserve_their_memory_and_give_it_back(slack: FakeSlack) -> None:
    csv = slack.add_file("F1", "costs.csv", "text/csv", ARTIFACT_CSV)
    gone = slack.add_file("F2", "gone.csv", "text/csv", b"a,b\n" * 100)
    slack.shared_files.pop("F2")  # Slack answers 404: its memory comes back at once
    budget = MemoryBudget(MB)
    got = await message_parts_for_files(
        web_client(slack), [csv, gone], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
        budget=budget, budget_wait=LONG_WAIT)
    assert [inline(p) for p in got.parts if "inlineData" in p] == [("text/csv", ARTIFACT_CSV)]
    assert got.notes == ["`gone.csv` couldn't be downloaded from Slack"]
    assert got.reservation is not None
    assert budget.in_use == got.reservation.amount == MEMORY_PER_FILE_BYTE * len(ARTIFACT_CSV)
    got.release()  # ADK has the message
    got.release()
    assert budget.in_use == 0 and got.parts == []


async def test_files_wait_for_memory_and_are_noted_when_none_comes(slack: FakeSlack) -> None:
    a = slack.add_file("F1", "a.csv", "text/csv", b"a\n" * 100)
    b = slack.add_file("F2", "b.csv", "text/csv", b"b\n" * 100)
    budget = MemoryBudget(MEMORY_PER_FILE_BYTE * 300)  # both files: 1200 of 900 bytes
    other_turn = await budget.reserve(budget.capacity, 0)
    assert other_turn is not None
    parts, notes = unpack(await message_parts_for_files(
        web_client(slack), [a, b], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
        budget=budget, budget_wait=0.05))
    assert parts == []
    assert notes == [
        "`b.csv` was not passed on: the files of one message can take only so much memory; "
        "send it again in a message of its own",
        "`a.csv` was not passed on: too many files are being processed right now; "
        "send it again in a moment",
    ]
    assert slack.calls_to("download") == []  # nothing downloaded without memory
    assert budget.in_use == budget.capacity  # the other turn's, nothing leaked
    other_turn.release()
    got = await message_parts_for_files(
        web_client(slack), [a], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
        budget=budget, budget_wait=0.05)
    assert [inline(p) for p in got.parts if "inlineData" in p] == [("text/csv", b"a\n" * 100)]
    got.release()
    assert budget.in_use == 0


async def test_a_turn_stopped_mid_download_gives_its_memory_back(slack: FakeSlack) -> None:
    f = slack.add_file("F1", "slow.csv", "text/csv", ARTIFACT_CSV)
    slack.hold_download("F1")
    budget = MemoryBudget(MB)
    task = asyncio.create_task(message_parts_for_files(
        web_client(slack), [f], max_bytes=MB, max_files=5, allowed_mimetypes=ALLOWED,
        budget=budget, budget_wait=LONG_WAIT))
    await slack.wait_for_calls("download", 1)
    assert budget.in_use > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_use == 0
    slack.release_download("F1")

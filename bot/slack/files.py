"""Files between Slack and the agent, on the Slack side.

- **Agent → Slack.** The turn's attachments (agent artifacts, CSVs of big tables) are
  uploaded into the thread with ``files_upload_v2`` (:func:`upload_attachments`).
- **Slack → agent.** Files a user attached to a message are downloaded from Slack with the bot
  token and become ``inlineData`` parts of the ADK message (:func:`message_parts_for_files`).
  The memory they take is reserved first in the process's budget
  (MAX_ATTACHMENT_MEMORY_BYTES, :mod:`bot.memory_budget`) and given back once ADK has the
  message.

Nothing here raises for one bad file: what was skipped comes back as short notes for the user.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.file_types import (
    KB,
    UNTYPED,
    base64_size,
    canonical_mimetype,
    guess_mimetype,
    human_size,
)
from bot.memory_budget import MEMORY_PER_FILE_BYTE, MemoryBudget, Reservation
from bot.thread_io import Attachment, FileParts, code_name

log = logging.getLogger("bot.files")

_EXCEL_FILETYPES = frozenset({"xls", "xlsx", "xlsm"})
# Extensions Slack needs to show an uploaded image inline (first one is used when missing).
_EXTENSIONS = MappingProxyType({
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "image/svg+xml": (".svg",),
    "text/csv": (".csv",),
    "text/plain": (".txt",),
    "text/markdown": (".md",),
    "application/json": (".json",),
    "application/pdf": (".pdf",),
})
# Hosts the bot token may be sent to (plus the host of the client's own API base URL).
_SLACK_HOST_SUFFIXES = ("slack.com", "slack-gov.com")
_CHUNK = 64 * KB
BUSY_NOTE = ("was not passed on: too many files are being processed right now; "
             "send it again in a moment")




def parse_mimetypes(value: str) -> frozenset[str]:
    """The ``ATTACHMENT_MIMETYPES`` setting (comma-separated) as a set of canonical types."""
    types = (t.split(";")[0].strip().lower() for t in value.split(","))
    return frozenset(canonical_mimetype(t) for t in types if t)


def upload_filename(attachment: Attachment) -> str:
    """The filename to upload: an image (or a file without any extension) gets the extension
    of its mimetype, so Slack previews it."""
    name = attachment.filename
    extensions = _EXTENSIONS.get(attachment.mimetype)
    if extensions is None:
        guessed = mimetypes.guess_extension(attachment.mimetype, strict=False)
        extensions = (guessed,) if guessed else ()
    if not extensions:
        return name
    suffix = PurePosixPath(name).suffix.lower()
    if attachment.mimetype.startswith("image/"):
        return name if suffix in extensions else name + extensions[0]
    return name if suffix else name + extensions[0]


async def upload_attachments(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str | None,
    attachments: Sequence[Attachment],
) -> None:
    """Upload a turn's files into the thread (``thread_ts`` None: the channel/DM itself) in one
    ``files_upload_v2`` call. Raises slack_sdk's errors (SlackApiError, SlackRequestError)."""
    if not attachments:
        return
    uploads: list[dict[str, Any]] = []
    for attachment in attachments:
        upload: dict[str, Any] = {
            "content": attachment.content,
            "filename": upload_filename(attachment),
            "title": attachment.title,
        }
        if attachment.mimetype.startswith("image/"):
            upload["alt_txt"] = attachment.title
        uploads.append(upload)
    await client.files_upload_v2(file_uploads=uploads, channel=channel, thread_ts=thread_ts)


def file_mimetype(file: Mapping[str, Any]) -> str:
    """The canonical mimetype of a Slack file object. CSVs come as ``text/csv``, as
    ``application/vnd.ms-excel`` (Windows) or with only ``filetype: csv``: all give text/csv."""
    mimetype = str(file.get("mimetype") or "").split(";")[0].strip().lower()
    filetype = str(file.get("filetype") or "").strip().lower()
    name = str(file.get("name") or "")
    suffix = PurePosixPath(name.lower()).suffix.lstrip(".")
    if filetype == "csv" or (suffix == "csv" and mimetype in UNTYPED | {"text/plain"}):
        return "text/csv"
    if mimetype == "application/vnd.ms-excel":
        return "application/vnd.ms-excel" if {filetype, suffix} & _EXCEL_FILETYPES else "text/csv"
    if mimetype in UNTYPED:
        return guess_mimetype(name) if name else "application/octet-stream"
    return canonical_mimetype(mimetype)


def _file_name(file: Mapping[str, Any]) -> str:
    for key in ("name", "title", "id"):
        value = file.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "a file"


class _TooLarge(Exception):
    pass


class _LargerThanSaid(Exception):
    """More bytes came than the size Slack gave for the file (the memory reserved)."""


class _DownloadFailed(Exception):
    pass


def _token_may_go_to(url: str, client: AsyncWebClient) -> bool:
    """Only Slack's own hosts (or the host the client talks to) ever see the bot token."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return False
    if parts.scheme == "https" and any(
        host == s or host.endswith("." + s) for s in _SLACK_HOST_SUFFIXES
    ):
        return True
    api = urlsplit(client.base_url)
    return host == (api.hostname or "").lower() and parts.port == api.port


async def _download(
    session: aiohttp.ClientSession,
    client: AsyncWebClient,
    url: str,
    *,
    mimetype: str,
    max_bytes: int,
    cap: int,
) -> bytes:
    """The file, read in chunks: at most `cap` bytes (its size as Slack gave it, no more
    than `max_bytes`) are ever buffered."""
    headers = {"Authorization": f"Bearer {client.token}"}
    options: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=float(client.timeout))}
    if client.proxy:
        options["proxy"] = client.proxy
    if client.ssl is not None:
        options["ssl"] = client.ssl
    try:
        async with session.get(url, headers=headers, **options) as response:
            if response.status != 200:
                raise _DownloadFailed(f"HTTP {response.status}")
            if response.content_type == "text/html" and mimetype != "text/html":
                # files.slack.com answers a missing or wrong token with its sign-in page.
                raise _DownloadFailed("Slack did not accept the bot token; is files:read granted?")
            length = response.content_length
            if length is not None and length > max_bytes:
                raise _TooLarge
            if length is not None and length > cap:
                raise _LargerThanSaid
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                if len(data) + len(chunk) > cap:
                    raise _TooLarge if cap >= max_bytes else _LargerThanSaid
                data += chunk
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _DownloadFailed(type(exc).__name__) from exc


async def _part_for_file(
    session: aiohttp.ClientSession,
    client: AsyncWebClient,
    file: Mapping[str, Any],
    *,
    mimetype: str,
    max_bytes: int,
    cap: int,
) -> tuple[dict[str, Any] | None, str]:
    name = code_name(_file_name(file))
    too_large = f"{name} is larger than the {human_size(max_bytes)} limit"
    url = file.get("url_private_download") or file.get("url_private")
    if not isinstance(url, str) or not url or not client.token:
        return None, f"{name} couldn't be read from Slack"
    if not _token_may_go_to(url, client):
        log.warning("not downloading a file from an unexpected host %r", urlsplit(url).hostname)
        return None, f"{name} couldn't be read from Slack"
    try:
        content = await _download(session, client, url, mimetype=mimetype, max_bytes=max_bytes,
                                  cap=cap)
    except _TooLarge:
        return None, too_large
    except _LargerThanSaid:
        log.warning("Slack file %s is larger than its size (%d bytes); not passed on",
                    file.get("id") or name, cap)
        return None, (f"{name} was larger than Slack said ({human_size(cap)}), so it was not "
                      "passed on")
    except _DownloadFailed as exc:
        log.warning("could not download Slack file %s: %s", file.get("id") or name, exc)
        return None, f"{name} couldn't be downloaded from Slack"
    if not content:
        return None, f"{name} is empty"
    data = base64.b64encode(content).decode("ascii")
    return {"inlineData": {"mimeType": mimetype, "data": data}}, ""


def _declared_size(file: Mapping[str, Any], max_bytes: int) -> int:
    """The bytes a file may have: its size as Slack gives it, no more than `max_bytes`."""
    size = file.get("size")
    return min(size, max_bytes) if isinstance(size, int) and size >= 0 else max_bytes


async def message_parts_for_files(
    client: AsyncWebClient,
    files: Sequence[Mapping[str, Any]],
    *,
    max_bytes: int,
    max_files: int,
    allowed_mimetypes: frozenset[str],
    budget: MemoryBudget | None = None,
    budget_wait: float = 0.0,
) -> FileParts:
    """Download the files a user attached (Slack file objects, e.g. ``Turn.files``) with the
    client's bot token and return them as ADK Content parts
    (``{"inlineData": {"mimeType", "data": <base64>}}``, in message order, each after a text
    part naming the file), plus notes for the files left out: unsupported type, over
    ``max_bytes`` (checked on the reported size before downloading, and again while
    streaming), more bytes than Slack said, beyond ``max_files``, or failed downloads.

    With a `budget`, the memory the files will take (MEMORY_PER_FILE_BYTE per byte of their
    sizes as Slack gives them) is reserved for all of them at once before any download
    starts, waiting up to `budget_wait` seconds; files that get no memory are left out with
    a note. The caller gives it back with :meth:`FileParts.release`."""
    notes: list[str] = []
    wanted = _files_to_fetch(files, max_bytes=max_bytes, max_files=max_files,
                             allowed_mimetypes=allowed_mimetypes, notes=notes)
    reservation: Reservation | None = None
    if wanted and budget is not None:
        wanted, reservation = await _reserve(budget, budget_wait, wanted, max_bytes, notes)
    if not wanted:
        return FileParts([], notes)

    try:
        results = await _fetch_parts(client, wanted, max_bytes)
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
    parts = _named_parts(wanted, results)
    notes.extend(note for part, note in results if part is None and note)
    if reservation is not None:
        # Only what was read stays reserved (a failed or smaller download gives back the
        # rest at once).
        reservation.shrink(MEMORY_PER_FILE_BYTE * sum(
            base64_size(part["inlineData"]["data"]) for part, _ in results if part is not None))
    return FileParts(parts, notes, reservation)


def _files_to_fetch(
    files: Sequence[Mapping[str, Any]],
    *,
    max_bytes: int,
    max_files: int,
    allowed_mimetypes: frozenset[str],
    notes: list[str],
) -> list[tuple[Mapping[str, Any], str]]:
    """The files to download, each with its mimetype, in message order. Those of a type not
    allowed, over `max_bytes` as Slack gives their size, or beyond `max_files` are noted and
    left out."""
    wanted: list[tuple[Mapping[str, Any], str]] = []
    allowed = frozenset(canonical_mimetype(t) for t in allowed_mimetypes)
    for file in files:
        name = code_name(_file_name(file))
        mimetype = file_mimetype(file)
        if mimetype not in allowed:
            notes.append(f"{name}: this file type isn't supported")
            continue
        size = file.get("size")
        if isinstance(size, int) and size > max_bytes:
            notes.append(f"{name} is larger than the {human_size(max_bytes)} limit")
            continue
        if len(wanted) >= max_files:
            notes.append(f"{name} was not passed on (at most {max_files} files per message)")
            continue
        wanted.append((file, mimetype))
    return wanted


def _named_parts(
    wanted: list[tuple[Mapping[str, Any], str]],
    results: list[tuple[dict[str, Any] | None, str]],
) -> list[dict[str, Any]]:
    """The downloaded files' parts, each after a text part naming it."""
    parts: list[dict[str, Any]] = []
    for (file, mimetype), (part, _) in zip(wanted, results, strict=True):
        if part is not None:
            # Each file is named just before its data: a part has no name of its own, and
            # the agent must tell two CSVs apart (and know which files it did not get).
            parts += [{"text": f"\n(attached file: {_file_name(file)}, {mimetype})"}, part]
    return parts


async def _reserve(
    budget: MemoryBudget,
    wait: float,
    wanted: list[tuple[Mapping[str, Any], str]],
    max_bytes: int,
    notes: list[str],
) -> tuple[list[tuple[Mapping[str, Any], str]], Reservation | None]:
    """Reserve the memory of the files to download, all in one reservation (a turn never
    holds part of what it needs while it waits for the rest: two turns doing that could
    each wait for the other). The files that get none are noted and left out."""
    costs = [MEMORY_PER_FILE_BYTE * _declared_size(file, max_bytes) for file, _ in wanted]
    fit = len(wanted)
    while sum(costs[:fit]) > budget.capacity:
        fit -= 1  # more than the whole budget: the first ones go now, the rest are noted
    for file, _ in wanted[fit:]:
        notes.append(f"{code_name(_file_name(file))} was not passed on: the files of one "
                     "message can take only so much memory; send it again in a message of "
                     "its own")
    wanted = wanted[:fit]
    if not wanted:
        return [], None
    total = sum(costs[:fit])
    if not budget.fits_now(total):
        log.info("waiting for memory for attached files (%d bytes; %d of %d in use, %d "
                 "waiting before)", total, budget.in_use, budget.capacity, budget.waiting)
    reservation = await budget.reserve(total, wait)
    if reservation is None:
        log.warning("no memory for attached files in time (%d bytes; %d of %d in use); they "
                    "are not passed on", total, budget.in_use, budget.capacity)
        notes.extend(f"{code_name(_file_name(file))} {BUSY_NOTE}" for file, _ in wanted)
        return [], None
    return wanted, reservation


async def _fetch_parts(
    client: AsyncWebClient, wanted: list[tuple[Mapping[str, Any], str]], max_bytes: int
) -> list[tuple[dict[str, Any] | None, str]]:
    own_session = client.session is None or client.session.closed
    session = aiohttp.ClientSession() if own_session else client.session
    assert session is not None
    try:
        return list(await asyncio.gather(
            *(
                _part_for_file(session, client, file, mimetype=mimetype, max_bytes=max_bytes,
                               cap=_declared_size(file, max_bytes))
                for file, mimetype in wanted
            )
        ))
    finally:
        if own_session:
            await session.close()

"""The files a turn's agent created (ADK artifacts, `TurnResult.artifacts` from
`artifactDelta`), fetched from ADK as attachments for the thread; what was left out comes
back as short notes for the user. Nothing here raises for one bad artifact."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from bot.adk.client import AdkClient, is_safe_artifact_name
from bot.file_types import UNTYPED, base64_size, guess_mimetype, human_size
from bot.thread_io import Attachment, code_name

log = logging.getLogger("bot.files")  # one logger for files both ways


def _display_name(artifact_name: str) -> str:
    """What a user sees: user-scoped ``user:`` prefix and folders dropped."""
    name = artifact_name.removeprefix("user:")
    return PurePosixPath(name).name or name.strip("/") or "artifact"


def decode_base64(data: str) -> bytes:
    """Decodes standard or URL-safe base64, with or without padding; ValueError if invalid."""
    text = "".join(data.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def _artifact_attachment(
    name: str, part: Mapping[str, Any], max_bytes: int
) -> tuple[Attachment | None, str]:
    """One artifact Part as an Attachment, or None and the note saying why not."""
    shown = _display_name(name)
    quoted = code_name(shown)
    inline = part.get("inlineData", part.get("inline_data"))
    if isinstance(inline, Mapping):
        data = inline.get("data")
        if not isinstance(data, str):
            return None, f"{quoted} has no content, so it was not uploaded"
        size = base64_size("".join(data.split()))
        if size > max_bytes:
            return None, (
                f"{quoted} was too large to upload ({human_size(size)} > {human_size(max_bytes)})"
            )
        try:
            content = decode_base64(data)
        except ValueError:
            return None, f"{quoted} could not be read, so it was not uploaded"
        mimetype = str(inline.get("mimeType") or inline.get("mime_type") or "").lower()
        if mimetype in UNTYPED:
            mimetype = guess_mimetype(shown)
    elif isinstance(part.get("text"), str):
        content = part["text"].encode("utf-8")
        guessed = guess_mimetype(shown, "text/plain")
        mimetype = guessed if guessed.startswith("text/") else "text/plain"
        if len(content) > max_bytes:
            return None, (
                f"{quoted} was too large to upload "
                f"({human_size(len(content))} > {human_size(max_bytes)})"
            )
    elif isinstance(part.get("fileData", part.get("file_data")), Mapping):
        return None, f"{quoted} is stored outside the agent (a file link), so it was not uploaded"
    else:
        return None, f"{quoted} has no content, so it was not uploaded"
    if not content:
        return None, f"{quoted} is empty, so it was not uploaded"
    return Attachment(filename=shown, content=content, title=shown, mimetype=mimetype), ""


async def _fetch_one(
    adk: AdkClient, user_id: str, session_id: str, name: str, version: int, max_bytes: int
) -> tuple[Attachment | None, str]:
    if not is_safe_artifact_name(name):
        # An absolute path, a `..` segment, a backslash, a control character or no name at
        # all would point the ADK URL outside the session's artifacts: never requested.
        log.warning("refused an artifact with an unsafe name", extra={"session": session_id})
        return None, f"{code_name(name)} was not uploaded: its name is not a safe file name"
    try:
        part = await adk.get_artifact(user_id, session_id, name, version)
    except Exception as exc:  # one bad artifact must not cost the turn its answer
        log.warning(
            "could not fetch artifact %r version %s: %s",
            name, version, exc, extra={"session": session_id},
        )
        return None, f"{code_name(_display_name(name))} could not be fetched from the agent"
    return _artifact_attachment(name, part, max_bytes)


async def fetch_artifacts(
    adk: AdkClient,
    user_id: str,
    session_id: str,
    artifacts: Mapping[str, int],
    *,
    max_bytes: int,
) -> tuple[list[Attachment], list[str]]:
    """Fetch the artifact versions of a turn (``{filename: version}``, e.g.
    ``TurnResult.artifacts``) from ADK. Returns the attachments, in the order given, and notes
    for the ones left out (too large, empty, a file link, or failed). Never raises for one
    artifact."""
    results = await asyncio.gather(
        *(
            _fetch_one(adk, user_id, session_id, name, version, max_bytes)
            for name, version in artifacts.items()
        )
    )
    attachments = [a for a, _ in results if a is not None]
    notes = [note for a, note in results if a is None and note]
    return attachments, notes

"""File types and sizes as the bot shows and compares them: one canonical mimetype for the
several labels of a type, a mimetype guessed from a file name, sizes in KB and MB."""

from __future__ import annotations

import mimetypes
from types import MappingProxyType

KB = 1024
MB = 1024 * 1024

# Slack labels the same file type in several ways; these map to one canonical mimetype.
MIMETYPE_ALIASES = MappingProxyType({
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "application/x-pdf": "application/pdf",
    "text/json": "application/json",
    "application/csv": "text/csv",
    "application/x-csv": "text/csv",
    "text/x-csv": "text/csv",
    "text/comma-separated-values": "text/csv",
})
# The labels of a file whose type is not known.
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def canonical_mimetype(mimetype: str) -> str:
    """The one name of a type Slack or an agent labels in several ways."""
    return MIMETYPE_ALIASES.get(mimetype, mimetype)


def guess_mimetype(name: str, default: str = "application/octet-stream") -> str:
    """The canonical mimetype of a file name's extension; `default` when it has none."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return MIMETYPE_ALIASES.get(guessed or "", guessed or default)


def human_size(n: int) -> str:
    """``12.3 MB``, ``5 MB``, ``812 KB``, ``300 bytes`` (binary units)."""
    if n >= MB:
        return f"{n / MB:.1f}".removesuffix(".0") + " MB"
    if n >= KB:
        return f"{n / KB:.1f}".removesuffix(".0") + " KB"
    return f"{n} bytes"


def base64_size(data: str) -> int:
    """Decoded size of base64 text (standard or URL-safe, padded or not) without decoding."""
    n = len(data.rstrip("="))
    return n * 3 // 4

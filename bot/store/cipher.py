"""Encryption at rest for what the installation store keeps (tokens, refresh tokens), so
that a Redis dump or a replica's RDB file does not leak them. Fernet (AES-128-CBC with an
HMAC-SHA256, from `cryptography`: https://cryptography.io/en/latest/fernet/).

`INSTALLATION_ENCRYPTION_KEY` holds one key, or several separated by commas: the first
encrypts, every one decrypts, so a key is replaced by putting the new one first, running
`python -m bot installs rekey`, then dropping the old one."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.config import encryption_key_problem


class CipherError(Exception):
    """A sealed value that none of the keys opens (another key, or a damaged value)."""


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Cipher:
    """Seals and opens strings with the keys of INSTALLATION_ENCRYPTION_KEY."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    @classmethod
    def from_setting(cls, value: str) -> Cipher:
        problem = encryption_key_problem(value)
        if problem is not None:
            raise ValueError(f"INSTALLATION_ENCRYPTION_KEY: {problem}")
        return cls([part.strip() for part in value.split(",") if part.strip()])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise CipherError("a stored installation cannot be decrypted with "
                              "INSTALLATION_ENCRYPTION_KEY") from exc

    def reseal(self, sealed: str) -> str:
        """`sealed` under the first key (for a key replacement)."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise CipherError("a stored installation cannot be decrypted with "
                              "INSTALLATION_ENCRYPTION_KEY") from exc

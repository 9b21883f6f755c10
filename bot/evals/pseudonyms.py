"""Stable pseudonyms for the people in exported conversations (pure).

A person's pseudonym is `person-` and eight hex digits of an HMAC of their Slack user id,
keyed with EVAL_PSEUDONYM_KEY: the same person gets the same pseudonym in every case and
every export under one key, and nobody without the key can tell who it is. Without a key
the digest is unkeyed: still stable, but anyone who can list the workspace's user ids can
match them to pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# Slack user ids (U…, W… on Enterprise Grid), in a mention `<@U…>` / `<@U…|name>`, or
# alone (then shaped as Slack's are, U0…/W0…, so that words such as UTILIZATION or
# WAREHOUSE1 stay; the ids of the people in the thread are replaced by `learn` anyway).
_USER_ID = re.compile(r"<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>|\b([UW][0-9][A-Z0-9]{7,})\b")
# E-mail addresses: people's, in what they wrote or what a tool found.
_EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b")
MIN_NAME_CHARS = 2  # a one-letter name would replace letters inside words
MIN_PART_CHARS = 3  # a part of a name shorter than this ("Li", "Al") is too common


class Pseudonyms:
    """Who is who in one export: user id -> pseudonym, and the names to replace."""

    def __init__(self, *, key: bytes = b"", keep_names: bool = False) -> None:
        self.key = key
        self.keep_names = keep_names
        self._names: dict[str, str] = {}  # a whole name, casefolded -> its pseudonym
        self._parts: dict[str, str] = {}  # a part of a name, as written -> its pseudonym
        self._pattern: re.Pattern[str] | None = None

    def of(self, user_id: str) -> str:
        """The pseudonym of `user_id` (the id itself with keep_names)."""
        if self.keep_names:
            return user_id
        digest = (hmac.new(self.key, user_id.encode(), hashlib.sha256).hexdigest() if self.key
                  else hashlib.sha256(user_id.encode()).hexdigest())
        return f"person-{digest[:8]}"

    def learn(self, user_id: str, name: str) -> None:
        """`name` is how `user_id` appears in the text: it (in any case), the id, and each
        capitalised part of a name of several words ("Adams" of "Alice Adams", as
        written) are replaced by their pseudonym."""
        if self.keep_names:
            return
        pseudonym = self.of(user_id)
        name = " ".join(name.split())
        for text in (user_id, name):
            if len(text) >= MIN_NAME_CHARS:
                self._names[text.casefold()] = pseudonym
        words = name.split(" ")
        for word in words if len(words) > 1 else ():
            if len(word) >= MIN_PART_CHARS and word[0].isupper():
                self._parts.setdefault(word, pseudonym)
        self._pattern = None

    def scrub(self, text: str) -> str:
        """`text` with every learned name, every Slack user id and every e-mail address
        replaced."""
        if self.keep_names or not text:
            return text
        text = _USER_ID.sub(self._id_sub, text)
        text = _EMAIL.sub(lambda m: self.of(m.group(0).lower()) + "@example.invalid", text)
        if not self._names and not self._parts:
            return text
        if self._pattern is None:
            # Longest first ("Ann Lee" before "Ann"); whole names in any case, parts as
            # written (so that "bill" stays when someone is called "Bill Ng").
            names = sorted(self._names, key=len, reverse=True)
            parts = sorted(self._parts, key=len, reverse=True)
            alternatives = [f"(?i:{re.escape(n)})" for n in names]
            alternatives += [re.escape(p) for p in parts]
            self._pattern = re.compile(
                r"(?<![\w@])(@?)(" + "|".join(alternatives) + r")(?!\w)")
        return self._pattern.sub(self._name_sub, text)

    def _name_sub(self, match: re.Match[str]) -> str:
        found = match.group(2)
        pseudonym = self._names.get(found.casefold()) or self._parts.get(found) or found
        return match.group(1) + pseudonym

    def _id_sub(self, match: re.Match[str]) -> str:
        mentioned, bare = match.group(1), match.group(2)
        return self.of(mentioned or bare)

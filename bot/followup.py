"""The follow-up policy: which un-mentioned follow-ups in an engaged thread are answered.

Its one definition, used by the settings (`FOLLOWUP_POLICY_*`) and the access decisions."""

from __future__ import annotations

from typing import Literal, get_args

# `always`: every follow-up; `starter`: only the thread's starter's; `mention`: none.
FollowupPolicy = Literal["always", "starter", "mention"]
FOLLOWUP_POLICY_NAMES: tuple[str, ...] = get_args(FollowupPolicy)

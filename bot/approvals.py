"""Who may answer the agent's requests for a human: pure decisions from the approval settings.

When the agent pauses a run for a human (ADK's `adk_request_confirmation`, to approve a tool
call, or `adk_request_input`, to give it text), the thread's next message is the answer
(bot/conversation.py). The paused run belongs to the person whose message made the agent
ask (the asker, stored with the requests); they may answer it, and so may the approvers
(APPROVER_USERS, members of APPROVER_USERGROUPS). Everyone else is told so, privately, and
their message changes nothing.

Requests for input follow the same rule as confirmations: what the agent asked for steers
the paused run (a billing project, a budget) as much as a yes does.

Callers look a user's groups up only when `needs_user_groups(...)` is true.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.adk.events import CONFIRMATION, INPUT, HumanRequest

if TYPE_CHECKING:
    from bot.config import Settings


@dataclass(frozen=True)
class Approvers:
    """APPROVER_USERS and APPROVER_USERGROUPS, as immutable sets of Slack ids."""

    users: frozenset[str] = frozenset()
    usergroups: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> Approvers:
        return cls(users=frozenset(settings.approver_users),
                   usergroups=frozenset(settings.approver_usergroups))


def answerable(requests: Sequence[HumanRequest]) -> list[HumanRequest]:
    """The requests a message answers (a sign-in request cannot be answered from Slack)."""
    return [r for r in requests if r.name in (CONFIRMATION, INPUT)]


def askers(requests: Sequence[HumanRequest]) -> list[str]:
    """The people whose messages made the agent ask, sorted; "" for a request whose asker
    is not known (stored without one)."""
    return sorted({r.asker for r in requests})


def _named(approvers: Approvers, requests: Sequence[HumanRequest], user: str) -> bool:
    """Whether the user may answer without a look at their groups."""
    who = askers(requests)
    return "" in who or user in who or user in approvers.users


def needs_user_groups(approvers: Approvers, requests: Sequence[HumanRequest], user: str
                      ) -> bool:
    """Whether `may_answer` depends on the user's groups (look them up only then)."""
    return bool(requests) and bool(approvers.usergroups) and not _named(approvers, requests,
                                                                       user)


def may_answer(approvers: Approvers, requests: Sequence[HumanRequest], *, user: str,
               user_groups: frozenset[str]) -> bool:
    """Whether `user`'s message may answer the open `requests`. `user_groups` are the
    user's groups among `approvers.usergroups` (empty when `needs_user_groups` is false).
    A request whose asker is not known may be answered by anyone in the thread."""
    return _named(approvers, requests, user) or bool(user_groups & approvers.usergroups)


def not_yours_text(approvers: Approvers, requests: Sequence[HumanRequest]) -> str:
    """The private note for someone whose message may not answer the open requests."""
    who = " or ".join(f"<@{asker}>" for asker in askers(requests) if asker)
    if approvers.users or approvers.usergroups:
        who += " or an approver"
    what = ("approval request" if any(r.name == CONFIRMATION for r in requests)
            else "question")
    return (f":lock: Only {who} can answer the agent's {what} in this thread, so your "
            "message was not passed on to the agent.")

"""Who may use a control (stop, reset, the feedback buttons): the access policy of
questions applied to one use of it (`bot.access.decide_control`), user groups included."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from bot.access import AccessPolicy, Allow, Decision, decide_control, needs_user_groups
from bot.turns import InstallRef

log = logging.getLogger("bot.controls")

# A user's groups (user id, and the installation asked through; None: the one workspace).
UserGroupLookup = Callable[[str, InstallRef | None], Awaitable[frozenset[str]]]


class ControlAccess:
    """The access policy applied to one use of a control. The user's groups are looked up
    (through the cached `user_groups`, e.g. `UserGroupResolver.groups_of`) only when the
    policy names groups."""

    def __init__(self, policy: AccessPolicy, user_groups: UserGroupLookup | None = None) -> None:
        self.policy = policy
        self._user_groups = user_groups

    @property
    def denied_message(self) -> str:
        return self.policy.denied_message

    async def decide(self, *, control: str, channel: str, user: str, addressed: bool = True,
                     log_extra: Mapping[str, str] | None = None,
                     install: InstallRef | None = None) -> Decision:
        """`control` names the control in the log line of a refusal (with `log_extra`);
        `install`: the installation it came through (many workspaces)."""
        groups = (await self._user_groups(user, install)
                  if self._user_groups is not None and needs_user_groups(self.policy)
                  else frozenset[str]())
        decision = decide_control(self.policy, channel=channel, user=user, user_groups=groups,
                                  addressed=addressed)
        if not isinstance(decision, Allow):
            log.info("%s refused: %s", control, decision.reason,
                     extra={**(log_extra or {}), "outcome": "denied"})
        return decision

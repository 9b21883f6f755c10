"""A thread's mapping as Redis keeps it: the `<p>:{<key>}:thread` hash (bot/store/keys.py),
read into a record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.usage import thread_tokens


@dataclass(frozen=True)
class ThreadRecord:
    key: str
    engaged: bool
    adk_user_id: str = ""
    session_id: str = ""
    generation: int = 0
    created_by: str = ""
    created_at: float = 0.0
    last_activity: float = 0.0
    turns: int = 0
    reset_at: str = ""  # ts of the last "reset": earlier messages do not seed a new session
    # The agent's open requests for a human (confirm a tool call, give input), as JSON:
    # the thread's next message answers them (bot/adk/events.py HumanRequest).
    awaiting: str = ""
    # The tokens of the thread's turns: (model, kind) -> count (bot/usage.py).
    tokens: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, key: str, data: Mapping[str, str]) -> ThreadRecord:
        return cls(
            key=key,
            engaged=data.get("engaged") == "1",
            adk_user_id=data.get("adk_user_id", ""),
            session_id=data.get("session_id", ""),
            generation=int(data.get("generation", "0") or 0),
            created_by=data.get("created_by", ""),
            created_at=float(data.get("created_at", "0") or 0),
            last_activity=float(data.get("last_activity", "0") or 0),
            turns=int(data.get("turns", "0") or 0),
            reset_at=data.get("reset_at", ""),
            awaiting=data.get("awaiting", ""),
            tokens=thread_tokens(data),
        )

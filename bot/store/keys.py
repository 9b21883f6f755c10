"""The Redis key layout. Every key of one thread shares a hash tag `{team:channel:thread}`,
so the scripts that work on a thread touch one slot. The intake script also appends the
thread's doorbell to the work stream in the same call (one round trip per event), so the
bot needs one Redis primary, not a Redis Cluster.

    <p>:{<key>}:thread        hash   engaged, adk_user_id, session_id, generation,
                                     created_by, created_at, last_activity, turns, reset_at,
                                     awaiting (the agent's open requests, with who asked)
    <p>:{<key>}:ev:<event_id> string Slack event id seen (redelivery dedupe), TTL
    <p>:{<key>}:msg:<ts>      string "q" queued / "r" running / "a" answer ready in the
                                     outbox / "d" delivered / "b" refused, the thread was
                                     busy (also the pair dedupe), TTL
    <p>:{<key>}:out:<ts>      string the turn's replies (JSON) between the ADK run and their
                                     delivery to Slack, so a crash in between loses nothing
    <p>:{<key>}:live:<ts>     string the ts of the turn's live (streamed/placeholder) message, so a
                                     re-run after a crash removes the half-written one, TTL
    <p>:{<key>}:q             list   the thread's FIFO of turns (JSON), oldest first
    <p>:{<key>}:lock          string `<worker>/<random>`: the worker running this thread (its
                                     consumer name) and a token of this hold, PX TTL
    <p>:{<key>}:tries:<ts>    string attempts at the turn that never finished (their worker
                                     died mid-turn), TTL; deleted when the turn is done
    <p>:{<key>}:fb:<turn_ts>  hash   feedback on a turn's answer: user id -> JSON {rating,
                                     session_id, invocation_id, at}; TTL FEEDBACK_TTL_DAYS
    <p>:work                  stream doorbells: {"k": <key>}; consumer group "workers"
    <p>:hb:<worker>           string a live worker's heartbeat (its consumer name), PX
                                     HEARTBEAT_TTL_SECONDS, refreshed on its own connection
    <p>:stop                  pub/sub channel: thread keys whose running turn must stop
    <p>:streams:<team>:<min>  string native streams started this minute (Slack Tier 2), TTL
    <p>:threads               zset   thread key -> last activity (for listing and purging)
    <p>:rate:{<team>:<user>}  string turns the user started in their current rate window,
                                     PX USER_RATE_WINDOW_SECONDS from the window's first turn
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str  # REDIS_KEY_PREFIX

    def _tag(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}"

    def thread(self, key: str) -> str:
        return f"{self._tag(key)}:thread"

    def event(self, key: str, event_id: str) -> str:
        return f"{self._tag(key)}:ev:{event_id}"

    def message(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:msg:{ts}"

    def outbox(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:out:{ts}"

    def live(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:live:{ts}"

    def queue(self, key: str) -> str:
        return f"{self._tag(key)}:q"

    def lock(self, key: str) -> str:
        return f"{self._tag(key)}:lock"

    def uploaded_parts(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:files:{ts}"

    def attempts(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:tries:{ts}"

    def deferrals(self, key: str, ts: str) -> str:
        return f"{self._tag(key)}:defer:{ts}"

    def feedback(self, key: str, turn_ts: str) -> str:
        return f"{self._tag(key)}:fb:{turn_ts}"

    def user_rate(self, team: str, user: str) -> str:
        """A user's rate-limit counter: a hash tag of its own (a user is not a thread)."""
        return f"{self.prefix}:rate:{{{team}:{user}}}"

    @property
    def work_stream(self) -> str:
        return f"{self.prefix}:work"

    @property
    def heartbeat_prefix(self) -> str:
        return f"{self.prefix}:hb:"

    def heartbeat(self, worker: str) -> str:
        return f"{self.heartbeat_prefix}{worker}"

    @property
    def threads_index(self) -> str:
        return f"{self.prefix}:threads"

    work_group: str = "workers"

"""The Redis key layout. The threads are spread over `REDIS_SHARDS` shards (a thread's
shard: CRC-32 of its key, modulo the count). Every key of a shard shares one hash tag
`{<p>:<n>}`: the thread's own keys, the shard's work stream, its threads index and the
workers' heartbeats in it. So every script and multi-key command touches one slot, and the
same layout runs on one Redis, behind Sentinel, or on a Redis Cluster
(https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).
`<s>` below is `<p>:{<p>:<n>}`, `<key>` the thread key `team:channel:thread_ts`.

    <s>:<key>:thread          hash   engaged, adk_user_id, session_id, generation,
                                     created_by, created_at, last_activity, turns, reset_at,
                                     awaiting (the agent's open requests, with who asked),
                                     tokens|<model>|<kind> (the thread's tokens)
    <s>:<key>:ev:<event_id>   string Slack event id seen (redelivery dedupe), TTL
    <s>:<key>:msg:<ts>        string "q" queued / "r" running / "a" answer ready in the
                                     outbox / "d" delivered / "b" refused, the thread was
                                     busy (also the pair dedupe), TTL
    <s>:<key>:out:<ts>        string the turn's replies (JSON) between the ADK run and their
                                     delivery to Slack, so a crash in between loses nothing
    <s>:<key>:live:<ts>       string the ts of the turn's live (streamed/placeholder) message,
                                     so a re-run after a crash removes the half-written one
    <s>:<key>:q               list   the thread's FIFO of turns (JSON), oldest first
    <s>:<key>:lock            string `<worker>/<random>`: the worker running this thread (its
                                     consumer name) and a token of this hold, PX TTL
    <s>:<key>:tries:<ts>      string attempts at the turn that never finished (their worker
                                     died mid-turn), TTL; deleted when the turn is done
    <s>:<key>:files:<ts>      set    reply parts whose files are uploaded, TTL
    <s>:<key>:defer:<ts>      string times the turn's delivery was put off, TTL
    <s>:<key>:fb:<turn_ts>    hash   feedback on a turn's answer: user id -> JSON {rating,
                                     session_id, invocation_id, at}, and "note:<user id>" ->
                                     JSON {correction, why, at}, what a 👎 voter said the
                                     answer should have been; TTL FEEDBACK_TTL_DAYS
    <s>:rated                 zset   "<key>|<turn_ts>" -> latest vote time: the shard's rated
                                     answers (eval export), trimmed to FEEDBACK_TTL_DAYS
    <s>:work                  stream the shard's doorbells {"k": <key>}; group "workers"
    <s>:threads               zset   the shard's thread keys -> last activity (listing, purging)
    <s>:usage:<YYYY-MM-DD>    hash   the shard's token usage of a UTC day (bot/usage.py):
                                     `<workspace>|<channel>|<model>|<kind>` -> tokens,
                                     `…|<model>|turns` and `…||turns` -> turns; written with the
                                     outbox, expires USAGE_RETENTION_DAYS after the day
    <s>:usagefold:<day>:<n>   string (first shard only) shard n's usage of the day is folded
                                     into the first shard's; written by `migrate` with the
                                     counts and deleted before it writes the new layout
    <s>:hb:<worker>           string a live worker's heartbeat (its consumer name), in every
                                     shard, PX HEARTBEAT_TTL_SECONDS
    <p>:layout                string the layout of the keys: "shards=<n>", checked at start
    <p>:stop                  pub/sub channel: thread keys whose running turn must stop
    <p>:streams:<team>:<min>  string native streams started this minute (Slack Tier 2), TTL
    <p>:rate:{<team>:<user>}  string turns the user started in their current rate window,
                                     PX USER_RATE_WINDOW_SECONDS from the window's first turn
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_SHARDS = 8


@dataclass(frozen=True)
class Keys:
    prefix: str  # REDIS_KEY_PREFIX
    shards: int = DEFAULT_SHARDS  # REDIS_SHARDS

    def shard_of(self, key: str) -> int:
        """The shard of thread `key` (stable across processes and restarts)."""
        return zlib.crc32(key.encode()) % self.shards

    def shard(self, n: int) -> str:
        """The common start of shard `n`'s keys, with its hash tag."""
        return f"{self.prefix}:{{{self.prefix}:{n}}}"

    @property
    def all_shards(self) -> range:
        return range(self.shards)

    def _tag(self, key: str) -> str:
        return f"{self.shard(self.shard_of(key))}:{key}"

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

    def work_stream(self, shard: int) -> str:
        return f"{self.shard(shard)}:work"

    def rated(self, shard: int) -> str:
        """The shard's index of the answers someone voted on."""
        return f"{self.shard(shard)}:rated"

    def threads_index(self, shard: int) -> str:
        return f"{self.shard(shard)}:threads"

    def usage(self, shard: int, day: str) -> str:
        """The shard's token usage of the UTC day `day` (YYYY-MM-DD)."""
        return f"{self.shard(shard)}:usage:{day}"

    @property
    def usage_fold_prefix(self) -> str:
        return f"{self.shard(0)}:usagefold:"

    def usage_fold(self, day: str, shard: int) -> str:
        """The marker of shard `shard`'s usage of `day` folded into the first shard's (in
        the first shard's slot, beside the hash it was added to)."""
        return f"{self.usage_fold_prefix}{day}:{shard}"

    def heartbeat_prefix(self, shard: int) -> str:
        return f"{self.shard(shard)}:hb:"

    def heartbeat(self, worker: str, shard: int) -> str:
        return f"{self.heartbeat_prefix(shard)}{worker}"

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"

    @property
    def layout_value(self) -> str:
        return f"shards={self.shards}"

    work_group: str = "workers"

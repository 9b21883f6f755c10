"""Per-user rate limit counters in Redis, shared by every replica.

A fixed window per user that opens with the user's first turn: the counter
`<p>:rate:{<team>:<user>}` is incremented by each turn the user starts and expires
USER_RATE_WINDOW_SECONDS after the first one. One script, one round trip per turn. The key
has a hash tag of its own (the user, not a thread), so it works on a Redis Cluster, and it is
never part of a thread's scripts."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.limits import RateLimit, RateLimited
from bot.store.keys import Keys

# KEYS: the user's counter; ARGV: window in ms. Count one more turn; a new counter (or one
# that somehow lost its expiry: it would hold the user back for ever) gets the window.
# Returns {count, ms left in the window}. https://redis.io/docs/latest/commands/incr/
# describes this counter pattern.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if count == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""


class UserRateLimiter:
    """Counts the turns each user starts; says when one is over the limit."""

    def __init__(self, client: aioredis.Redis, keys: Keys, limit: RateLimit) -> None:
        self.redis = client
        self.keys = keys
        self.limit = limit
        self._count = client.register_script(_COUNT)

    async def hit(self, team: str, user: str) -> RateLimited | None:
        """Count one turn of `user`; None while they are within the limit (and when the
        limit is off: then Redis is not asked)."""
        if not self.limit.enabled or not user:
            return None
        count, left_ms = await self._count(
            keys=[self.keys.user_rate(team, user)],
            args=[self.limit.window_seconds * 1000],
        )
        if int(count) <= self.limit.turns:
            return None
        return RateLimited(self.limit, max(0.0, int(left_ms) / 1000))

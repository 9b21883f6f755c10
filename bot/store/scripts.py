"""The Lua scripts the store runs on a thread's keys (bot/store/keys.py); each says its KEYS
and ARGV. Besides the thread's own keys, the intake script rings the thread's doorbell on the
work stream and the outbox script touches the threads index. Redis runs each script
atomically (https://redis.io/topics/eval-intro)."""

from __future__ import annotations

# KEYS: thread hash, event key, message key, queue (one thread, one hash tag), work stream
# ARGV: turn json, engages, dedupe ttl, thread ttl, now, thread key, most turns the queue may
# hold (0: no limit)
# A queued turn rings its thread's doorbell (XADD) in the same call: one round trip per
# event. The same event arriving again while its turn still waits (a Slack redelivery, or
# this command retried after a dropped connection) rings the doorbell again: harmless if
# the first ring went out, and the fix if it did not.
# A duplicate sets its event key again: a write, so that a WAIT after the script on the
# same connection (REDIS_MIN_REPLICAS) waits for the replicas to hold the first delivery's
# keys too (replication keeps the primary's order), since a redelivery may come because
# the first delivery was not confirmed by enough replicas.
INTAKE = """
local seen_event = redis.call('EXISTS', KEYS[2]) == 1
local state = redis.call('GET', KEYS[3])
if seen_event or state then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  if seen_event and state == 'q' then
    redis.call('XADD', KEYS[5], '*', 'k', ARGV[6])
    return 'requeue'
  end
  return 'duplicate'
end
if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[1], 'engaged') == 0 then
  return 'ignored'
end
-- A full queue refuses the turn. Its event and message are marked ("b": busy) like a queued
-- one, so a redelivery or the mention's twin is a duplicate and the person is told once.
local most = tonumber(ARGV[7])
if most > 0 and redis.call('LLEN', KEYS[4]) >= most then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  redis.call('SET', KEYS[3], 'b', 'EX', ARGV[3])
  return 'busy'
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
redis.call('SET', KEYS[3], 'q', 'EX', ARGV[3])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'engaged', '1') end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'k', ARGV[6])
return 'queued'
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Lua shared by the scripts that hand a worker its next turn. `take(queue, thread, msg,
# out, live, tries, ttl)` reads the head of the thread's queue and marks that turn running
# unless it is further along, and reads what the turn needs to start: the thread's mapping,
# and the outbox and live message an earlier attempt at the turn may have left. Returns
# {head, state it had (false, "q", "r", "a" or "d"), mapping (flat), outbox, live,
# attempts}, {head} for an entry that is not a turn, or {} when the queue is empty. `msg`,
# `out`, `live` and `tries` are key prefixes under the thread's own hash tag
# (bot/store/keys.py), completed with the ts.
#
# `attempts` counts the earlier attempts at the turn that never finished: a head found
# already running ("r") was taken by a worker that died (kill -9, out of memory), or lost
# Redis or the thread's lock mid-turn, since every other way out of a turn moves it on
# ("a", "d") or back ("q", a shutdown's hand-back). The count is kept per turn, in
# `tries:<ts>` next to the turn's state, because the work stream's delivery count
# (`Doorbell.deliveries`) cannot be it: a thread's next message rings a new doorbell
# (delivered once) that takes the same dead turn, and one doorbell is worked on for all
# the turns its worker drains, so its count mixes turns. A turn put off while Slack fails
# is in state "a": never counted here.
_TAKE = """
local function take(queue, thread, msg, out, live, tries, ttl)
  local head = redis.call('LINDEX', queue, 0)
  if not head then return {} end
  local ok, turn = pcall(cjson.decode, head)
  if not ok or type(turn) ~= 'table' or type(turn['ts']) ~= 'string' then
    return {head}
  end
  local ts = turn['ts']
  local state = redis.call('GET', msg .. ts)
  local attempts = 0
  if not state or state == 'q' then
    redis.call('SET', msg .. ts, 'r', 'EX', ttl)
  elseif state == 'r' then
    attempts = redis.call('INCR', tries .. ts)
    redis.call('EXPIRE', tries .. ts, ttl)
  end
  return {head, state, redis.call('HGETALL', thread), redis.call('GET', out .. ts),
          redis.call('GET', live .. ts), attempts}
end
"""

# KEYS: lock, queue, thread; ARGV: token, lock ttl ms, msg, out, live and tries prefixes,
# dedupe ttl, heartbeat key prefix, "1" to take back a hold of the caller's own. Take the
# thread and its first turn in one round trip: {0} if a live worker holds it, else
# {1, take(...)..., taken over}.
#
# A lock's value is `<worker>/<random>`, its worker's consumer name first. The thread is
# free when nobody holds its lock (SET NX), or when its holder's heartbeat
# (`<heartbeat prefix><worker>`, bot/store/heartbeats.py) has expired: that worker is dead,
# and its lock is taken over at once instead of after its TTL. Both are checked and the
# lock replaced in this one script, so two live workers never both take a thread. A lock
# that names the caller itself is taken back when the caller says it holds the thread in
# no task (it abandoned it when Redis failed mid-turn). A lock whose value names no worker
# is left to its TTL.
CLAIM = _TAKE + """
local taken_over = 0
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local held = redis.call('GET', KEYS[1])
  local owner = held and string.match(held, '^(.+)/[^/]+$')
  if not owner then return {0} end
  local mine = owner == string.match(ARGV[1], '^(.+)/[^/]+$')
  if mine and ARGV[9] ~= '1' then return {0} end
  if not mine and redis.call('EXISTS', ARGV[8] .. owner) == 1 then return {0} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if not mine then taken_over = 1 end
end
local taken = take(KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {1, taken, taken_over}
"""

# KEYS: message key of the finished turn, its outbox, its live key, queue, thread, lock, its
# attempts; ARGV: dedupe ttl, msg, out, live and tries prefixes, lock token, the finished
# turn's ts. The turn is delivered: mark it, drop its outbox, live key and attempts, and pop
# it if it is still the head. Then take the next one, if the lock is still ours; 0 if it is
# not (it expired, e.g. while Redis was unreachable, and another worker may have the thread
# now: the caller stops).
FINISH_AND_TAKE = _TAKE + """
redis.call('SET', KEYS[1], 'd', 'EX', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[7])
local head = redis.call('LINDEX', KEYS[4], 0)
if head then
  local ok, turn = pcall(cjson.decode, head)
  if ok and type(turn) == 'table' and turn['ts'] == ARGV[7] then redis.call('LPOP', KEYS[4]) end
end
if redis.call('GET', KEYS[6]) ~= ARGV[6] then return 0 end
return take(KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[1])
"""

# KEYS: queue, thread; ARGV: msg, out, live and tries prefixes, dedupe ttl.
TAKE_HEAD = _TAKE + """
return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""

# KEYS: lock, the running turn's message key; ARGV: token, "1" if a turn was running.
# Shutting down mid-turn: the thread is freed and its running turn is queued again ("q"),
# so the next worker starts it afresh, not as the retry of an attempt that died.
HAND_BACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' and redis.call('GET', KEYS[2]) == 'r' then
  redis.call('SET', KEYS[2], 'q', 'KEEPTTL')
end
return 1
"""

# KEYS: lock, queue; ARGV: token. Release the thread only if nothing is queued (atomic, so a
# turn queued meanwhile is never stranded: its doorbell finds the lock free).
RELEASE_IF_EMPTY = """
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: outbox, message key, thread, lock, threads index, the shard's usage hash of the day;
# ARGV: replies (JSON), dedupe ttl, thread ttl, now, thread key, lock token ("" for no
# check), the usage hash's expiry (Unix time; "" when the turn records no usage), then
# triples (field of the thread's tokens or "" for none, field of the day's usage,
# increment). The turn's replies are saved (state "a"), the turn counted on its thread and
# its tokens on the thread and the day, only while the lock is still the caller's: 0 if it
# is not (another worker may be running the turn: nothing may be posted). The same save
# again (the command repeated after a dropped connection) counts nothing twice.
SAVE_OUTBOX = """
if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then return 0 end
local again = redis.call('GET', KEYS[2]) == 'a'
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], 'a', 'EX', ARGV[2])
if not again then
  redis.call('HINCRBY', KEYS[3], 'turns', 1)
  if ARGV[7] ~= '' then
    for i = 8, #ARGV - 2, 3 do
      if ARGV[i] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 2]) end
      redis.call('HINCRBY', KEYS[6], ARGV[i + 1], ARGV[i + 2])
    end
    redis.call('EXPIREAT', KEYS[6], ARGV[7])
  end
end
redis.call('HSET', KEYS[3], 'last_activity', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return 1
"""

EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS (one thread, one hash tag): thread hash, queue, lock. ARGV: cutoff, dry run.
# A mapping is purged only if it is still idle since before the cutoff and no turn of
# it is queued or running, checked and deleted atomically.
# A write the replicas must copy, behind every earlier write of the primary (one
# replication stream): WAIT after it confirms those too. The outbox's own expiry again.
REPLICATE_MARK = """
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""

PURGE_THREAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'expired', '0'} end
local last = redis.call('HGET', KEYS[1], 'last_activity') or '0'
if (tonumber(last) or 0) >= tonumber(ARGV[1]) then return {'active', last} end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('EXISTS', KEYS[3]) == 1 then
  return {'busy', last}
end
if ARGV[2] ~= '1' then redis.call('DEL', KEYS[1]) end
return {'purged', last}
"""

# KEYS: the answer's feedback hash, the shard's index of rated answers. ARGV: user, vote
# (JSON), the user's note field, TTL, index member, vote time, the index's cutoff, rating.
# A 👍 drops the user's note (a note belongs to a 👎). Returns the vote it replaced.
RECORD_VOTE = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[8] == 'up' then redis.call('HDEL', KEYS[1], ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
return previous
"""

# KEYS: the answer's feedback hash. ARGV: user, how a 👎 reads in a vote, the note field,
# the note (JSON; empty: remove it), TTL. Only while the user's vote is a 👎.
ANNOTATE_VOTE = """
local vote = redis.call('HGET', KEYS[1], ARGV[1])
if not vote or not string.find(vote, ARGV[2], 1, true) then return 0 end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], ARGV[3])
else redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: the first shard's usage hash of a day, the fold's marker (both in the first shard's
# slot); ARGV: the source's TTL in ms (0: none), the marker's TTL in ms, then pairs (field,
# count) of a usage hash of the day whose shard a new layout lacks (`python -m bot
# migrate`). The counts are added and the marker written in one step, so a migration that
# stopped before deleting the source and runs again adds nothing twice: 0 when the marker
# was there. The target keeps the longer expiry of the two.
FOLD_USAGE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
local ttl = tonumber(ARGV[1])
if ttl > 0 and ttl > redis.call('PTTL', KEYS[1]) then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""

"""The key layout in Redis, checked at start and migrated by `python -m bot migrate`.

`<p>:layout` says how a prefix's keys are laid out (`shards=<n>`, bot/store/keys.py). A
process refuses to start on keys of another layout, so it never reads them wrongly: the
keys of an unsharded layout (`<p>:{<thread key>}:…`, one `<p>:work` stream, one
`<p>:threads` index), or of another shard count. The migration moves every thread's keys to
their new names with their TTLs (DUMP and RESTORE, https://redis.io/docs/latest/commands/restore/),
carries the threads index over, rings a doorbell for every thread with queued turns, drops
the old streams and heartbeats, folds the token usage of shards the new layout lacks into
its first shard, and writes the new layout. Run it with the bots stopped."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.scripts import FOLD_USAGE

MIGRATE_COMMAND = "python -m bot migrate"
# How long a usage fold's marker outlives a migration that stopped before deleting it.
FOLD_MARKER_MS = 7 * 86400 * 1000


class LayoutError(Exception):
    """Redis holds this prefix's keys in another layout."""


@dataclass
class MigrationReport:
    old_layout: str
    moved_keys: int = 0
    threads: set[str] = field(default_factory=set)
    rung: int = 0  # threads with queued turns, given a doorbell in the new layout
    dropped: int = 0  # old work streams, indexes and heartbeats


async def check_layout(client: aioredis.Redis, keys: Keys, *, mark: bool = True) -> None:
    """Raise LayoutError (naming the migration command) when this prefix's keys are in
    another layout. A prefix with no keys yet is marked with this layout when `mark` (the
    bot's start: it is about to write the prefix's keys); a command that only reads (a
    report) passes mark=False and leaves Redis as it found it."""
    current = await client.get(keys.layout)
    if current == keys.layout_value:
        return
    if current is None and not await _has_unsharded_keys(client, keys):
        if not mark:
            return
        if await client.set(keys.layout, keys.layout_value, nx=True):
            return
        current = await client.get(keys.layout)  # another process marked it meanwhile
        if current == keys.layout_value:
            return
    found = "an unsharded layout" if current is None else f"the layout {current!r}"
    raise LayoutError(
        f"Redis holds the keys of REDIS_KEY_PREFIX={keys.prefix!r} in {found}, and "
        f"REDIS_SHARDS={keys.shards} needs {keys.layout_value!r}: stop the bots and run "
        f"`{MIGRATE_COMMAND}` with these settings (or set REDIS_SHARDS back)")


async def _has_unsharded_keys(client: aioredis.Redis, keys: Keys) -> bool:
    # One key per command: on a cluster the two are in different slots.
    for name in (f"{keys.prefix}:work", f"{keys.prefix}:threads"):
        if await client.exists(name):
            return True
    return False


def _old_thread_key(name: str, prefix: str) -> tuple[str, str] | None:
    """(thread key, what follows it) of a thread's key in any layout of `prefix`, or None
    for keys that are not a thread's."""
    match = re.fullmatch(rf"{re.escape(prefix)}:\{{([^{{}}]*)\}}:(.+)", name)
    if match is None:
        return None
    tag, rest = match.groups()
    if re.fullmatch(rf"{re.escape(prefix)}:\d+", tag):
        # Sharded: <p>:{<p>:<n>}:<team>:<channel>:<thread>:<suffix>, or a shard's own key.
        parts = rest.split(":", 3)
        if len(parts) < 4:
            return None
        return ":".join(parts[:3]), parts[3]
    return tag, rest  # unsharded: <p>:{<thread key>}:<suffix>


def _old_shard_keys(name: str, prefix: str) -> str | None:
    """The kind of an old layout's shared key ("work", "threads", "hb"), or None."""
    if name in (f"{prefix}:work", f"{prefix}:threads"):
        return name.rsplit(":", 1)[1]
    if name.startswith(f"{prefix}:hb:"):
        return "hb"
    shard = rf"{re.escape(prefix)}:\{{{re.escape(prefix)}:\d+\}}"
    match = re.fullmatch(rf"{shard}:(work|threads|hb:.+)", name)
    return match.group(1).split(":", 1)[0] if match else None


async def live_heartbeats(client: aioredis.Redis, prefix: str) -> list[str]:
    """Heartbeat keys of running workers of `prefix`, in any layout."""
    return [str(name) async for name in client.scan_iter(match=f"{prefix}:*hb:*", count=1000)]


async def migrate_layout(client: aioredis.Redis, keys: Keys) -> MigrationReport:
    """Move this prefix's keys to the layout of `keys` (see the module's docstring)."""
    old = await client.get(keys.layout)
    report = MigrationReport(old_layout=str(old) if old else "unsharded")
    if old == keys.layout_value:
        return report
    names = [str(n) async for n in client.scan_iter(match=f"{keys.prefix}:*", count=1000)]
    index: dict[str, float] = {}
    # Fold markers: a stopped migration's (found) and this one's.
    markers = {name for name in names if name.startswith(keys.usage_fold_prefix)}
    for name in names:
        if name in markers:
            continue
        if await _fold_usage(client, name, keys, markers):
            report.moved_keys += 1
            continue
        kind = _old_shard_keys(name, keys.prefix)
        if kind is not None:
            if kind == "threads":
                entries = cast("list[tuple[str, float]]",
                               await client.zrange(name, 0, -1, withscores=True))
                index.update({str(k): float(v) for k, v in entries})
            continue
        parsed = _old_thread_key(name, keys.prefix)
        if parsed is None:
            continue
        thread, suffix = parsed
        new_name = f"{keys.thread(thread).rsplit(':', 1)[0]}:{suffix}"
        report.threads.add(thread)
        if new_name == name:
            continue
        await _move(client, name, new_name)
        report.moved_keys += 1
    # What the old layout shared: its index is carried over (into the shards of the new
    # one), its heartbeats go, and so do its streams but for those the new layout keeps
    # (their doorbells still name the right threads).
    for name in names:
        kind = _old_shard_keys(name, keys.prefix)
        if kind is None or (kind == "work" and _is_current(name, keys)):
            continue
        await client.delete(name)
        report.dropped += 1
    for thread, score in index.items():
        await client.zadd(keys.threads_index(keys.shard_of(thread)), {thread: score})
    await _ring_queued(client, keys, report)
    for marker in markers:  # every source folded and deleted: nothing left to guard
        await client.delete(marker)
    await client.set(keys.layout, keys.layout_value)
    return report


async def _fold_usage(client: aioredis.Redis, name: str, keys: Keys,
                      markers: set[str]) -> bool:
    """A shard's token usage of a day (`<s>:usage:<day>`) whose shard the new layout lacks
    is added to the first shard's of the day (the usage report adds up every shard's), with
    the longer expiry of the two; True when `name` was one. The two hashes are in different
    slots (a Redis Cluster may hold them on different nodes), so the counts are added with
    a marker in the target's slot, in one script (FOLD_USAGE), and the source deleted after
    it: a migration stopped between the two adds nothing twice when it runs again. The
    markers (`markers` collects them) are deleted once every fold is done."""
    shard = rf"{re.escape(keys.prefix)}:\{{{re.escape(keys.prefix)}:(\d+)\}}"
    match = re.fullmatch(rf"{shard}:usage:(\d{{4}}-\d{{2}}-\d{{2}})", name)
    if match is None or int(match.group(1)) < keys.shards:
        return False
    day = match.group(2)
    marker = keys.usage_fold(day, int(match.group(1)))
    fields = cast("dict[str, str]", await client.hgetall(name))
    ttl = int(await client.pttl(name))
    pairs: list[str | int] = []
    for field_name, value in fields.items():
        pairs += [field_name, int(value)]
    await client.register_script(FOLD_USAGE)(
        keys=[keys.usage(0, day), marker], args=[max(ttl, 0), FOLD_MARKER_MS, *pairs])
    markers.add(marker)
    await client.delete(name)
    return True


def _is_current(name: str, keys: Keys) -> bool:
    return any(name == keys.work_stream(s) for s in keys.all_shards)


async def _move(client: aioredis.Redis, old: str, new: str) -> None:
    payload = await client.dump(old)  # raw bytes, whatever the client decodes
    if payload is None:
        return  # expired meanwhile
    ttl = int(await client.pttl(old))
    await client.restore(new, max(ttl, 0), payload, replace=True)
    await client.delete(old)


async def _ring_queued(client: aioredis.Redis, keys: Keys, report: MigrationReport) -> None:
    for shard in keys.all_shards:
        try:
            await client.xgroup_create(keys.work_stream(shard), keys.work_group, id="0",
                                       mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    for thread in sorted(report.threads):
        if await client.llen(keys.queue(thread)):
            await client.xadd(keys.work_stream(keys.shard_of(thread)), {"k": thread})
            report.rung += 1

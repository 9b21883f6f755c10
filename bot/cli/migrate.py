"""`python -m bot migrate [--force]`: move the keys of `REDIS_KEY_PREFIX` to the key layout
of the current settings (`REDIS_SHARDS`), from the unsharded layout or another shard count
(bot/store/layout.py). Run it with every bot of the prefix stopped: it refuses while a
worker's heartbeat is alive, unless `--force`."""

from __future__ import annotations

import argparse

from bot.cli.sessions import CliError, run_with_settings
from bot.config import Settings
from bot.runtime import connect_redis
from bot.store.connect import REDIS_FAILURES, close_redis, describe_redis
from bot.store.keys import Keys
from bot.store.layout import live_heartbeats, migrate_layout


def add_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "migrate", help="move the Redis keys to the key layout of these settings",
        description="Moves the keys of REDIS_KEY_PREFIX to the layout REDIS_SHARDS asks for "
                    "(from the unsharded layout or another shard count). Stop every bot of "
                    "the prefix first.")
    parser.add_argument("--force", action="store_true",
                        help="migrate even though workers' heartbeats are alive")


async def _migrate(settings: Settings, *, force: bool) -> int:
    client, _embedded = connect_redis(settings)
    keys = Keys(settings.redis_key_prefix, settings.redis_shards)
    shown = describe_redis(settings)
    try:
        running = await live_heartbeats(client, keys.prefix)
        if running and not force:
            raise CliError(f"{len(running)} worker heartbeat(s) of prefix {keys.prefix!r} are "
                           "alive: stop the bots first (or pass --force)")
        report = await migrate_layout(client, keys)
    except REDIS_FAILURES as exc:
        raise CliError(f"Redis at {shown} failed: {exc}") from exc
    finally:
        await close_redis(client)
    if report.old_layout == keys.layout_value:
        print(f"nothing to do: the keys are in the layout {keys.layout_value!r} already")
        return 0
    print(f"migrated prefix {keys.prefix!r} from {report.old_layout!r} to "
          f"{keys.layout_value!r}: {report.moved_keys} key(s) of {len(report.threads)} "
          f"thread(s) moved, {report.rung} thread(s) with queued turns rung, "
          f"{report.dropped} old stream, index and heartbeat key(s) dropped")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    return run_with_settings(lambda settings: _migrate(settings, force=args.force))

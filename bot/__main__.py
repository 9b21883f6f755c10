"""Command line: `python -m bot serve | console | doctor | sessions | migrate | installs |
evals | usage`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from pydantic import ValidationError

from bot.cli.evals import add_evals_parser, run_evals
from bot.cli.installs import add_installs_parser, run_installs
from bot.cli.migrate import add_migrate_parser, run_migrate
from bot.cli.sessions import add_sessions_parser, run_sessions
from bot.cli.usage import add_usage_parser, run_usage
from bot.config import Settings, describe_validation_error
from bot.logs import setup_logging
from bot.runtime import StartupError

log = logging.getLogger("bot.config")


def load_settings() -> Settings | None:
    try:
        return Settings()
    except ValidationError as exc:
        for line in describe_validation_error(exc):
            print(f"config error: {line}", file=sys.stderr)
        return None


async def _serve(settings: Settings) -> int:
    from bot.runtime import build_slack_bot
    from bot.server import serve

    bot = await build_slack_bot(settings)
    # What is built by now (modules, clients, the app) lives as long as the process. Frozen,
    # it is left out of the cyclic garbage collector's full collections, which otherwise
    # walk ~100,000 objects and stop the event loop for 50-100 ms (measured: the intake's
    # p99 at 500 events/s went from 146 ms to 22 ms; docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    await serve(bot)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adk-slack-bot", description="A Slack bridge for a Google ADK agent."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the bot (Socket Mode if SLACK_APP_TOKEN is set, else HTTP)")
    console = sub.add_parser("console", help="a Slack thread in the terminal, same code path")
    console.add_argument("--thread", help="continue an earlier console thread (its ts)")
    doctor = sub.add_parser(
        "doctor", help="check settings, Slack (token, scopes, Socket Mode), Redis and ADK",
        description="Runs every check and prints what to fix. Exit 0 when nothing is wrong "
                    "(warnings allowed), 1 otherwise.")
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    add_sessions_parser(sub)
    add_migrate_parser(sub)
    add_installs_parser(sub)
    add_evals_parser(sub)
    add_usage_parser(sub)
    args = parser.parse_args(argv)

    if args.command in ("doctor", "sessions", "migrate", "installs", "evals", "usage"):
        setup_logging("ERROR", json_lines=False)
        try:
            if args.command == "doctor":
                from bot.cli.doctor import run_doctor

                return run_doctor(as_json=args.json)
            if args.command == "migrate":
                return run_migrate(args)
            if args.command == "installs":
                return run_installs(args)
            if args.command == "evals":
                return run_evals(args)
            if args.command == "usage":
                return run_usage(args)
            return run_sessions(args)
        except KeyboardInterrupt:
            return 130

    settings = load_settings()
    if settings is None:
        return 2
    setup_logging(
        settings.log_level if args.command == "serve" else "WARNING",
        json_lines=args.command == "serve",
    )
    for line in settings.deprecation_warnings():
        log.warning(line)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        from bot.console import run_console

        return asyncio.run(run_console(settings, thread_ts=args.thread))
    except StartupError as exc:
        for line in exc.lines:
            print(f"startup error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

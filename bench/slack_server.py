"""The fake Slack Web API in a process of its own, so that its work does not share an event
loop with the load generator. A small control API on a second port tells the benchmark what
the bot posted.

    python -m bench.slack_server PORT_FILE

writes ``<slack port> <control port>`` to PORT_FILE when both listen, and runs until SIGTERM.
``GET /bench/calls?since=N`` returns the calls from index N on, each as
``[method, at (unix time), token or null, ok]``, where the token is the benchmark's message id
found in a ``said=<speaker>: <token>`` line of the posted text.
"""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.fake_slack import FakeSlack, message_text

SAID_RE = re.compile(r"^said=[^:\n]*: ([A-Z]\d+)\b", re.MULTILINE)
USERS = {"U1": "Alice", "U2": "Bob", "U3": "Carol", "U4": "Dave"}
MAX_CHANNELS = 200


def call_token(params: dict[str, Any]) -> str | None:
    text = message_text(params)
    extra = params.get("markdown_text")
    if isinstance(extra, str):
        text = f"{text}\n{extra}"
    match = SAID_RE.search(text)
    return match.group(1) if match else None


def write_ports(port_file: Path, slack_port: int, control_port: int) -> None:
    port_file.write_text(f"{slack_port} {control_port}\n")


async def serve(port_file: Path) -> None:
    slack = FakeSlack()
    await slack.start()
    for user_id, name in USERS.items():
        slack.add_user(user_id, name.lower(), real_name=f"{name} Bench", display_name=name)
    for i in range(MAX_CHANNELS):
        slack.add_channel(f"C{i:04d}", f"bench-{i}")
    tokens: list[str | None] = []  # call index -> token, filled lazily

    async def calls(request: web.Request) -> web.Response:
        since = max(0, int(request.query.get("since", "0")))
        snapshot = slack.calls[since:]
        while len(tokens) < since + len(snapshot):
            call = slack.calls[len(tokens)]
            if call.response is None:  # still being handled: report it on the next poll
                break
            tokens.append(call_token(call.params))
        done = len(tokens) - since
        rows = [[c.method, c.at, tokens[since + i], c.ok] for i, c in enumerate(snapshot[:done])]
        return web.json_response({"calls": rows, "next": since + len(rows)})

    app = web.Application()
    app.router.add_get("/bench/calls", calls)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    write_ports(port_file, slack.port, control_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freezer = asyncio.create_task(freeze_records())
    await stop.wait()
    freezer.cancel()
    await runner.cleanup()
    await slack.stop()


async def freeze_records(period: float = 0.5) -> None:
    """Every call is kept for the benchmark, so what is alive stays alive: frozen every
    `period` seconds, it is left out of the garbage collector's full collections, which
    would otherwise grow with the calls and delay the answers the benchmark times."""
    while True:
        gc.freeze()
        await asyncio.sleep(period)


def main() -> None:
    asyncio.run(serve(Path(sys.argv[1])))


if __name__ == "__main__":
    main()

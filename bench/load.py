"""Slack-shaped traffic and the two ways of sending it: open loop (a fixed timeline) and a
burst (closed loop, a bounded number of requests in flight)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from tests.fakes import slack_events as ev
from tests.integration.harness import SIGNING_SECRET

USERS = ("U1", "U2", "U3", "U4")
BOT_USER = "UBOT"


@dataclass
class Request:
    """One signed POST to a bot's /slack/events; `kind` labels it for the reports."""

    body: bytes
    kind: str
    token: str | None = None  # the message id the answer will carry, for turns
    offset: float = 0.0  # open loop: seconds after the start of the timeline
    target: int = 0  # index of the bot to send it to


@dataclass
class Sent:
    kind: str
    token: str | None
    scheduled: float  # unix time it was due (open loop) or handed to the client (burst)
    latency: float  # seconds from `scheduled` to the response
    status: int


class Traffic:
    """Builds events with unique message ids (`<letter><digits>`) that the test agent echoes
    back in `said=<speaker>: <id>`."""

    def __init__(self, letter: str, channels: int, seed: int = 6) -> None:
        self.letter = letter
        self.channels = [f"C{i:04d}" for i in range(channels)]
        self.rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._channel = itertools.cycle(self.channels)

    def token(self) -> str:
        return f"{self.letter}{next(self._ids):06d}"

    def channel(self) -> str:
        return next(self._channel)

    @staticmethod
    def request(event: dict[str, object], kind: str, token: str | None = None) -> Request:
        return Request(json.dumps(ev.envelope(event)).encode(), kind, token)

    def mention(self, suffix: str = "", channel: str | None = None
                ) -> tuple[tuple[str, str], list[Request]]:
        """A top-level @mention starting a thread: its app_mention and message twins."""
        channel = channel or self.channel()
        user = self.rng.choice(USERS)
        token = self.token()
        text = f"<@{BOT_USER}> {token}{suffix}"
        ts = ev.next_ts()
        pair = [
            self.request(ev.app_mention(channel=channel, user=user, text=text, ts=ts),
                         "mention", token),
            self.request(ev.message(channel=channel, user=user, text=text, ts=ts),
                         "mention-twin", token),
        ]
        self.rng.shuffle(pair)
        return (channel, ts), pair

    def followup(self, thread: tuple[str, str], suffix: str = "") -> Request:
        channel, root = thread
        token = self.token()
        event = ev.message(channel=channel, user=self.rng.choice(USERS), text=f"{token}{suffix}",
                           thread_ts=root, parent_user_id="U1")
        return self.request(event, "followup", token)

    def chatter_top(self) -> Request:
        event = ev.message(channel=self.channel(), user=self.rng.choice(USERS),
                           text="coffee anyone?")
        return self.request(event, "chatter-top")

    def chatter_reply(self) -> Request:
        """A reply in a thread the bot was never mentioned in."""
        root = ev.next_ts()
        event = ev.message(channel=self.channel(), user=self.rng.choice(USERS),
                           text="sounds good", thread_ts=root, parent_user_id="U2")
        return self.request(event, "chatter-reply")


def signed_headers(body: bytes) -> dict[str, str]:
    headers = ev.sign(body, SIGNING_SECRET)
    headers["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)"
    return headers


@dataclass
class SendResult:
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_sent: float = 0.0  # unix time
    last_acked: float = 0.0
    behind_max: float = 0.0  # open loop: how late the sender itself started a request


@contextlib.asynccontextmanager
async def steady_gc(period: float = 0.5) -> AsyncIterator[None]:
    """Keep this process's garbage collector from pausing a measurement: what is alive now,
    and every `period` seconds after, is frozen (left out of full collections). Without it,
    a full collection over the benchmark's own records stopped the sender for 50-100 ms,
    and that showed up as ack latency. For the benchmark's processes only: the frozen
    objects are never collected as cyclic garbage."""
    gc.collect()
    gc.freeze()

    async def freeze() -> None:
        while True:
            await asyncio.sleep(period)
            gc.freeze()

    task = asyncio.create_task(freeze())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _post(http: aiohttp.ClientSession, url: str, req: Request, scheduled_mono: float,
                wall_offset: float, result: SendResult) -> None:
    try:
        async with http.post(url, data=req.body, headers=signed_headers(req.body)) as response:
            await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return
    done = time.monotonic()
    if status != 200:
        result.errors.append(f"HTTP {status} for {req.kind}")
    result.sent.append(Sent(req.kind, req.token, scheduled_mono + wall_offset,
                            done - scheduled_mono, status))
    result.last_acked = max(result.last_acked, done + wall_offset)


async def open_loop(http: aiohttp.ClientSession, urls: list[str], requests: list[Request],
                    limit_s: float) -> SendResult:
    """Send each request at `start + offset`, whatever happened to the earlier ones; its
    latency runs from that due time, so queueing anywhere (the sender included) counts."""
    result = SendResult()
    async with steady_gc():
        wall_offset = time.time() - time.monotonic()
        start = time.monotonic() + 0.05
        result.first_sent = start + wall_offset
        tasks: list[asyncio.Task[None]] = []
        for req in sorted(requests, key=lambda r: r.offset):
            due = start + req.offset
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.behind_max = max(result.behind_max, -delay)
            tasks.append(asyncio.create_task(
                _post(http, urls[req.target], req, due, wall_offset, result)))
        await asyncio.wait_for(asyncio.gather(*tasks), limit_s)
    return result


async def burst(http: aiohttp.ClientSession, urls: list[str], groups: list[list[Request]],
                in_flight: int, limit_s: float) -> SendResult:
    """Send every group as fast as `in_flight` slots allow; the requests of one group
    (a mention's twins) go out together."""
    result = SendResult()
    wall_offset = time.time() - time.monotonic()
    slots = asyncio.Semaphore(in_flight)
    result.first_sent = time.time()

    async def one(req: Request) -> None:
        async with slots:
            await _post(http, urls[req.target], req, time.monotonic(), wall_offset, result)

    async def group(reqs: list[Request]) -> None:
        await asyncio.gather(*(one(r) for r in reqs))

    async with steady_gc():
        await asyncio.wait_for(asyncio.gather(*(group(g) for g in groups)), limit_s)
    return result


def client_session(limit: int = 256) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    return aiohttp.ClientSession(connector=connector, trust_env=False,
                                 timeout=aiohttp.ClientTimeout(total=60))

"""Run the bot as a separate process in HTTP mode, as it runs in production, and talk to it
the way Slack does: signed Events API requests in, Web API calls out to a fake Slack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from bot.store.keys import DEFAULT_SHARDS, Keys
from tests.fakes.adk_server import PROXY_VARS, free_port, port_taken
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_events import send_event, send_interaction
from tests.waiting import eventually

SIGNING_SECRET = "test-signing-secret"
REPO = Path(__file__).resolve().parents[2]


class BotProcess:
    def __init__(self, slack: FakeSlack, adk_url: str, *, prefix: str, app_name: str = "test_agent",
                 redis_url: str = "redis://127.0.0.1:6379/0", port: int | None = None,
                 **settings: str) -> None:
        self.slack = slack
        self.prefix = prefix
        self.redis_url = redis_url
        self._own_port = port is None  # picked here: free to move if another process took it
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="bot-proc-"))
        self.log_path = self.workdir / "bot.log"
        self.env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        self.env.update({
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.base_url,
            "ADK_BASE_URL": adk_url,
            "ADK_APP_NAME": app_name,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": str(REPO),
            # The queue limit is checked (and its cost measured by the bench) but never refuses
            # the traffic the tests and the bench send: up to 20 messages at a time into one
            # thread. tests/integration/test_limits.py sets its own limits.
            "MAX_QUEUED_TURNS": "1000000",
        })
        self.env.pop("SLACK_APP_TOKEN", None)
        self.env.update({k.upper(): v for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._redis: aioredis.Redis | None = None
        # uvicorn closes a keep-alive connection idle for 5 s; a request sent on it as it
        # closes fails ("Server disconnected without sending a response"). Slack opens its
        # own connections; this client expires idle ones first, like the bot's ADK client.
        self.http = httpx.AsyncClient(timeout=15, trust_env=False,
                                      limits=httpx.Limits(keepalive_expiry=2.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        for attempt in range(3):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                await self._start(timeout)
                return
            except AssertionError:
                # A port picked free and let go may be taken by another process before the
                # bot binds it: move to another one.
                output = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if attempt == 2 or not self._own_port or not port_taken(output):
                    raise
                await self.stop()
                self.port = free_port()
                self.env["PORT"] = str(self.port)

    async def _start(self, timeout: float) -> None:
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"], cwd=self.workdir, env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited with {self.proc.returncode}:\n{self.log()}")
            try:
                response = await self.http.get(f"{self.url}/healthz")
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"bot did not become healthy:\n{self.log()}")

    async def stop(self, *, kill: bool = False, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                proc = self.proc
                await eventually(lambda: proc.poll() is not None, timeout=10, interval=0.05,
                                 what="the bot survived SIGKILL")
        code = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return code

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.stop()
        await self.http.aclose()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    async def wait_log(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
                       ) -> dict[str, Any]:
        """The first log record `match` accepts, once the bot has written it."""
        def found() -> dict[str, Any] | None:
            return next((r for r in self.log_records() if match(r)), None)

        return await eventually(found, timeout=timeout,
                                what=lambda: f"no such log record:\n{self.log()[-3000:]}")

    async def turn_logged(self, ts: str, timeout: float = 15.0) -> dict[str, Any]:
        """The log record a turn ends with (`turn <outcome>`), written after its last call to
        Slack: wait for it before reading what a turn leaves behind (its log lines, the
        metrics it counts)."""
        return await self.wait_log(
            lambda r: r.get("ts") == ts and "outcome" in r
            and r.get("message") in (f"turn {r['outcome']}", "turn recovered from the outbox"),
            timeout=timeout)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no work is left for any replica on this prefix: every doorbell on the
        work stream acked and deleted. A doorbell is added before the event is acked and
        deleted only after its thread's turns are done (their Slack calls made), so once
        this returns, every event sent before it has had all its effects. Use it before
        checking that something did *not* happen (no second answer, no post)."""
        if self._redis is None:
            url = self.env.get("REDIS_URL", self.redis_url)
            self._redis = (cast("aioredis.Redis", RedisCluster.from_url(url, decode_responses=True))
                           if self.env.get("REDIS_MODE") == "cluster"
                           else aioredis.Redis.from_url(url, decode_responses=True))
        client = self._redis
        keys = Keys(self.prefix, int(self.env.get("REDIS_SHARDS", DEFAULT_SHARDS)))
        streams = [keys.work_stream(shard) for shard in keys.all_shards]

        async def drained() -> bool:
            pipe = client.pipeline(transaction=False)
            for stream in streams:
                pipe.xlen(stream)
            return sum(int(n) for n in await pipe.execute()) == 0

        await eventually(drained, timeout=timeout, interval=0.05,
                         what=lambda: f"the work streams still have work\n{self.slack.summary()}")

    async def send(self, payload: dict[str, Any], *, retry_num: int | None = None
                   ) -> httpx.Response:
        return await send_event(self.http, f"{self.url}/slack/events", payload,
                                secret=SIGNING_SECRET, retry_num=retry_num)

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        """POST an interaction (a click, a submitted form) signed, as Slack sends it: a
        form with its JSON in `payload`."""
        return await send_interaction(self.http, f"{self.url}/slack/events", payload,
                                      secret=SIGNING_SECRET)

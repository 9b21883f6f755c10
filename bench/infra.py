"""The pieces every benchmark figure uses: the fake Slack process, bot processes, Redis
counters, /metrics parsing, memory readings and the machine description."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis

from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import PROXY_VARS, REPO, BotProcess

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BOT_TOKEN = "xoxb-test-token"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.4999) - 1))
    return ordered[index]


# ---- the fake Slack, in a process of its own ----------------------------------------------------


@dataclass
class SlackEndpoint:
    """What BotProcess needs to know about a Slack (token and Web API base URL)."""

    bot_token: str
    base_url: str


@dataclass
class Answer:
    token: str
    at: float  # unix time the fake Slack received the first call carrying the answer
    posts: int = 0  # successful chat.postMessage calls carrying it


@dataclass
class SlackProcess:
    proc: subprocess.Popen[bytes]
    port: int
    control_port: int
    workdir: Path
    next_call: int = 0
    answers: dict[str, Answer] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # warm-up and floor tokens
    methods: dict[str, int] = field(default_factory=dict)
    failed_calls: int = 0

    @classmethod
    def spawn(cls, limit_s: float = 20.0) -> SlackProcess:
        """Start `python -m bench.slack_server` and wait (bounded) for its ports."""
        workdir = Path(tempfile.mkdtemp(prefix="bench-slack-"))
        port_file = workdir / "ports"
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["PYTHONPATH"] = str(REPO)
        with open(workdir / "slack.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "bench.slack_server", str(port_file)],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"fake Slack exited: {(workdir / 'slack.log').read_text()}")
            text = port_file.read_text() if port_file.exists() else ""
            if text.endswith("\n"):
                port, control = (int(x) for x in text.split())
                return cls(proc, port, control, workdir)
            time.sleep(0.05)
        proc.kill()
        raise RuntimeError("fake Slack did not start")

    @classmethod
    async def start(cls) -> SlackProcess:
        return await asyncio.to_thread(cls.spawn)

    @property
    def endpoint(self) -> SlackEndpoint:
        return SlackEndpoint(BOT_TOKEN, f"http://127.0.0.1:{self.port}/api/")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def poll(self, http: aiohttp.ClientSession) -> None:
        """Fetch the calls made since the last poll and fold them into `answers`."""
        url = f"http://127.0.0.1:{self.control_port}/bench/calls?since={self.next_call}"
        async with http.get(url) as response:
            data = await response.json()
        for method, at, token, ok in data["calls"]:
            self.methods[method] = self.methods.get(method, 0) + 1
            if not ok:
                self.failed_calls += 1
            if token is None or not ok:
                continue
            answer = self.answers.setdefault(token, Answer(token, at))
            answer.at = min(answer.at, at)
            if method == "chat.postMessage":
                answer.posts += 1
        self.next_call = int(data["next"])

    async def wait_answers(self, http: aiohttp.ClientSession, tokens: set[str],
                           limit_s: float) -> bool:
        """Poll every 100 ms until every token is answered (or `limit_s` passed)."""
        deadline = time.monotonic() + limit_s
        while True:
            await self.poll(http)
            if tokens <= self.answers.keys():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---- bot processes ------------------------------------------------------------------------------


def make_bot(slack: SlackProcess, adk_url: str, prefix: str, redis_url: str = REDIS_URL,
             **settings: str) -> BotProcess:
    return BotProcess(cast(FakeSlack, slack.endpoint), adk_url, prefix=prefix,
                      redis_url=redis_url, **settings)


async def close_bot(bot: BotProcess) -> None:
    """Stop a bot process and remove its working directory (its log)."""
    await bot.close()
    shutil.rmtree(bot.workdir, ignore_errors=True)


def bot_pid(bot: BotProcess) -> int:
    assert bot.proc is not None
    return bot.proc.pid


def proc_status_kb(pid: int, field_name: str) -> int:
    """A `VmHWM`/`VmRSS` line of /proc/<pid>/status, in KiB (0 if gone)."""
    return kb_field(f"/proc/{pid}/status", field_name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples VmRSS of some processes every 100 ms (bounded by `max_seconds`)."""

    def __init__(self, pids: list[int], max_seconds: float = 300.0) -> None:
        self.pids = pids
        self.peak_kb = dict.fromkeys(pids, 0)
        self.max_seconds = max_seconds
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while time.monotonic() < deadline:
            for pid in self.pids:
                self.peak_kb[pid] = max(self.peak_kb[pid], proc_status_kb(pid, "VmRSS"))
            await asyncio.sleep(0.1)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def metrics_text(http: aiohttp.ClientSession, bot: BotProcess) -> str:
    async with http.get(f"{bot.url}/metrics") as response:
        return await response.text()


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative buckets (le, count) of a histogram without labels, +Inf as inf."""
    rows = re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.MULTILINE)
    return [(float(le), float(n)) for le, n in rows]


def histogram_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]],
                       q: float) -> float:
    """The upper bound (seconds) of the bucket holding quantile q of the observations made
    between two scrapes; inf if past the last finite bucket, NaN if none."""
    start = dict(before)
    delta = [(le, n - start.get(le, 0.0)) for le, n in after]
    total = max((n for _, n in delta), default=0.0)
    if total <= 0:
        return float("nan")
    for le, n in delta:
        if n >= q * total:
            return le
    return float("inf")


def counter_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for label_text, value in re.findall(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


# ---- Redis --------------------------------------------------------------------------------------


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5)


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under `prefix:` (bounded SCAN)."""
    deleted = 0
    for _ in range(1000):
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))[:5000]
        if not keys:
            break
        deleted += int(client.delete(*keys))
    return deleted


# ---- the machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    mem_kb = kb_field("/proc/meminfo", "MemTotal")
    cpu_model = ""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(),
                          re.MULTILINE)
        cpu_model = match.group(1).strip() if match else ""
    except OSError:
        pass
    redis_version = str(redis_client().info("server").get("redis_version", "?"))
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "redis": redis_version,
        "google_adk": importlib.metadata.version("google-adk"),
        "kernel": platform.release(),
    }


def kb_field(path: str, field_name: str) -> int:
    """A `<field>: <n> kB` line of a /proc file, in KiB (0 if absent)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0

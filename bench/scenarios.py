"""The benchmark's figures. Each runs against its own fake Slack process, fresh bot
process(es) and Redis key prefix, and returns a dict of plain numbers."""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis

from bench import infra
from bench.infra import SlackProcess, percentile
from bench.load import Request, SendResult, Traffic, burst, open_loop, steady_gc
from bench.redis_proxy import RedisProxy
from tests.fakes.adk_server import AdkServer
from tests.integration.harness import BotProcess

APP = "test_agent"
SPEAKERS = {"U1": "Alice", "U2": "Bob", "U3": "Carol", "U4": "Dave"}


@dataclass
class Ctx:
    adk_url: str
    adk_pid: int
    run_id: str
    quick: bool
    http: aiohttp.ClientSession
    redis: redis.Redis
    prefixes: list[str] = field(default_factory=list)
    bot_pids: list[int] = field(default_factory=list)  # the latest bots, for profiling

    def prefix(self, name: str) -> str:
        prefix = f"{self.run_id}-{name}"
        self.prefixes.append(prefix)
        return prefix


@asynccontextmanager
async def stack(ctx: Ctx, name: str, bots: int = 1, redis_url: str = infra.REDIS_URL,
                roles: tuple[str, ...] = (),
                **settings: str) -> AsyncIterator[tuple[SlackProcess, list[BotProcess], str]]:
    """A fake Slack process and `bots` bot processes sharing one fresh key prefix (with
    `roles`, one process per role, e.g. ("intake", "worker"))."""
    slack = await SlackProcess.start()
    prefix = ctx.prefix(name)
    started: list[BotProcess] = []
    try:
        for i in range(len(roles) or bots):
            role = {"role": roles[i]} if roles else {}
            bot = infra.make_bot(slack, ctx.adk_url, prefix, redis_url, **settings, **role)
            started.append(bot)
            await bot.start()
        ctx.bot_pids = [infra.bot_pid(b) for b in started]
        yield slack, started, prefix
    finally:
        for bot in started:
            await infra.close_bot(bot)
        slack.stop()
        infra.delete_prefix(ctx.redis, prefix)


@asynccontextmanager
async def fresh_adk(ctx: Ctx) -> AsyncIterator[None]:
    """A new `adk api_server` for one run of one figure. With in-memory sessions, ADK keeps
    every session it ever served; one server for the whole benchmark made each figure pay
    for the ones before it (its heap, and its garbage collector's pauses, grew with the
    sessions), so a figure's result depended on its place in the run."""
    adk = AdkServer(memory=True, log_level="warning")
    await asyncio.to_thread(adk.start)
    assert adk.pid is not None
    ctx.adk_url, ctx.adk_pid = adk.base_url, adk.pid
    try:
        yield
    finally:
        await asyncio.to_thread(adk.cleanup)


def urls(bots: list[BotProcess]) -> list[str]:
    return [f"{b.url}/slack/events" for b in bots]


def tally(slack: SlackProcess, tokens: set[str]) -> dict[str, int]:
    answered = [t for t in tokens if t in slack.answers]
    return {
        "expected": len(tokens),
        "answered": len(answered),
        "lost": len(tokens) - len(answered),
        "duplicated": sum(1 for t in answered if slack.answers[t].posts > 1),
        "unexpected": len(slack.answers.keys() - tokens - slack.known),
    }


def turn_tokens(groups: list[list[Request]]) -> set[str]:
    return {r.token for g in groups for r in g if r.token}


async def warm(ctx: Ctx, slack: SlackProcess, bots: list[BotProcess], traffic: Traffic,
               threads: int, suffix: str = "") -> list[tuple[str, str]]:
    """Start `threads` engaged threads and wait for their answers (also warms every path)."""
    made = [traffic.mention(suffix) for _ in range(threads)]
    groups = [pair for _, pair in made]
    for i, group in enumerate(groups):
        for req in group:
            req.target = i % len(bots)
    result = await burst(ctx.http, urls(bots), groups, in_flight=16, limit_s=60)
    if result.errors:
        raise RuntimeError(f"warm-up failed: {result.errors[:3]}")
    slack.known |= turn_tokens(groups)
    if not await slack.wait_answers(ctx.http, turn_tokens(groups), limit_s=60):
        raise RuntimeError("warm-up turns were not answered")
    return [thread for thread, _ in made]


def first_sent(result: SendResult) -> dict[str, float]:
    """token -> the earliest due/sent time of the events that carry it."""
    sent: dict[str, float] = {}
    for s in result.sent:
        if s.token:
            sent[s.token] = min(sent.get(s.token, s.scheduled), s.scheduled)
    return sent


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ---- 1. intake ack latency, open loop -----------------------------------------------------------


MIX = {"mention+twin": 0.20, "followup": 0.20, "chatter-top": 0.30, "chatter-reply": 0.30}
MIX_TEXT = ("per event: 20% @mention twins (app_mention + message, 10% new threads), "
            "20% follow-ups in engaged threads, 30% top-level chatter, "
            "30% replies in threads the bot never joined; instant agent")


async def intake(ctx: Ctx, rate: int, seconds: float, split: bool = False,
                 redis_url: str = infra.REDIS_URL, name: str = "intake",
                 **settings: str) -> dict[str, Any]:
    """With `split`, events go to an intake-only process and a worker-only process runs the
    turns (ROLE=intake / ROLE=worker), so acks never wait behind agent work. The bot
    processes use `redis_url` and `settings` (figure 8: a primary with a replica)."""
    roles = ("intake", "worker") if split else ()
    async with stack(ctx, f"{name}{rate}{'s' if split else ''}", redis_url=redis_url,
                     roles=roles, **settings) as (slack, all_bots, _):
        bots = all_bots[:1]
        traffic = Traffic("I", channels=100, seed=rate)
        threads = await warm(ctx, slack, bots, traffic, 8 if ctx.quick else 40)
        total = int(rate * seconds)
        units: list[list[Request]] = []
        pairs = round(total * MIX["mention+twin"] / 2)
        followups = round(total * MIX["followup"])
        tops = round(total * MIX["chatter-top"])
        replies = total - 2 * pairs - followups - tops
        units += [traffic.mention()[1] for _ in range(pairs)]
        units += [[traffic.followup(threads[i % len(threads)])] for i in range(followups)]
        units += [[traffic.chatter_top()] for _ in range(tops)]
        units += [[traffic.chatter_reply()] for _ in range(replies)]
        traffic.rng.shuffle(units)
        slot = 0
        for unit in units:
            for req in unit:
                req.offset = slot / rate
                slot += 1
        requests = [r for u in units for r in u]
        tokens = turn_tokens(units)

        text0 = await infra.metrics_text(ctx.http, bots[0])
        cpu0 = infra.cpu_seconds(infra.bot_pid(bots[0]))
        result = await open_loop(ctx.http, urls(bots), requests, limit_s=seconds + 60)
        cpu1 = infra.cpu_seconds(infra.bot_pid(bots[0]))
        answered_in_time = await slack.wait_answers(ctx.http, tokens, limit_s=60)
        await asyncio.sleep(0.5)
        await slack.poll(ctx.http)
        text1 = await infra.metrics_text(ctx.http, bots[0])
        before = infra.histogram(text0, "slackbot_ack_seconds")
        after = infra.histogram(text1, "slackbot_ack_seconds")
        lat = [s.latency for s in result.sent]
        send_seconds = result.last_acked - result.first_sent
        return {
            "rate": rate,
            "events": len(requests),
            "acked_200": sum(1 for s in result.sent if s.status == 200),
            "errors": len(result.errors),
            "seconds": round(send_seconds, 2),
            "p50_ms": ms(percentile(lat, 0.50)),
            "p99_ms": ms(percentile(lat, 0.99)),
            "max_ms": ms(max(lat, default=float("nan"))),
            "server_p50_le_ms": ms(infra.histogram_quantile(before, after, 0.50)),
            "server_p99_le_ms": ms(infra.histogram_quantile(before, after, 0.99)),
            "sender_behind_max_ms": ms(result.behind_max),
            "bot_cpu_share": round((cpu1 - cpu0) / max(send_seconds, 1e-9), 2),
            "all_answered": answered_in_time,
            **tally(slack, tokens),
        }


# ---- 2 + 3. overhead per turn, and the floor ----------------------------------------------------


async def floor_turn(http: aiohttp.ClientSession, adk_url: str, slack: SlackProcess,
                     session_id: str, channel: str, ts: str, text: str) -> float:
    """The least a bridge can do: create the session, run the turn on ADK (/run_sse), post
    the answer to Slack. Returns the /run_sse wall time (seconds)."""
    base = f"{adk_url}/apps/{APP}/users/slack-T0001/sessions"
    async with http.post(base, json={"sessionId": session_id}) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"floor: create session HTTP {response.status}")
    body = {"appName": APP, "userId": "slack-T0001", "sessionId": session_id,
            "newMessage": {"role": "user", "parts": [{"text": text}]}, "streaming": False}
    started = time.monotonic()
    answer: list[str] = []
    async with http.post(f"{adk_url}/run_sse", json=body) as response:
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data:") and line[5:].strip():
                event = json.loads(line[5:])
                for part in (event.get("content") or {}).get("parts") or []:
                    if part.get("text") and not part.get("thought"):
                        answer.append(part["text"])
    run_seconds = time.monotonic() - started
    post = {"channel": channel, "thread_ts": ts, "text": "".join(answer)}
    headers = {"Authorization": f"Bearer {infra.BOT_TOKEN}"}
    async with http.post(f"http://127.0.0.1:{slack.port}/api/chat.postMessage", json=post,
                         headers=headers) as response:
        await response.read()
    return run_seconds


async def floor_run(ctx: Ctx, slack: SlackProcess, traffic: Traffic, n: int, rate: float,
                    suffix: str) -> tuple[dict[str, float], list[float], set[str]]:
    """n floor turns on an open-loop timeline at `rate`; returns due times, run times."""
    due: dict[str, float] = {}
    runs: list[float] = []
    wall_offset = time.time() - time.monotonic()
    start = time.monotonic() + 0.05
    tasks = []

    async def one(token: str, channel: str, ts: str, speaker: str) -> None:
        # A session id of its own per run: repeated runs reuse the same tokens.
        runs.append(await floor_turn(ctx.http, ctx.adk_url, slack,
                                     f"floor-{token}-{secrets.token_hex(4)}", channel,
                                     ts, f"{speaker}: {token}{suffix}"))

    for i in range(n):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        token = traffic.token()
        slack.known.add(token)
        due[token] = at + wall_offset
        tasks.append(asyncio.create_task(one(token, traffic.channel(), f"{time.time():.6f}",
                                             SPEAKERS[traffic.rng.choice(list(SPEAKERS))])))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=n / rate + 60)
    return due, runs, set(due)


async def overhead(ctx: Ctx, n: int, rate: float, agent_sleep: float) -> dict[str, Any]:
    suffix = f" sleep={agent_sleep:g}"
    async with stack(ctx, "overhead") as (slack, bots, _):
        traffic = Traffic("O", channels=100, seed=2)
        await warm(ctx, slack, bots, traffic, 5, suffix)
        units = [traffic.mention(suffix)[1] for _ in range(n)]
        for i, unit in enumerate(units):
            for req in unit:
                req.offset = i / rate
        tokens = turn_tokens(units)
        text0 = await infra.metrics_text(ctx.http, bots[0])
        result = await open_loop(ctx.http, urls(bots), [r for u in units for r in u],
                                 limit_s=n / rate + 60)
        ok = await slack.wait_answers(ctx.http, tokens, limit_s=60)
        await asyncio.sleep(0.3)
        await slack.poll(ctx.http)
        text1 = await infra.metrics_text(ctx.http, bots[0])
        sent = first_sent(result)
        bot_totals = [slack.answers[t].at - sent[t] for t in tokens if t in slack.answers]
        bot_tally = tally(slack, tokens)

        # The floor: the same turns, done directly, against the same ADK and fake Slack.
        ftraffic = Traffic("F", channels=100, seed=3)
        await floor_run(ctx, slack, ftraffic, 5, rate, suffix)  # warm-up
        due, runs, ftokens = await floor_run(ctx, slack, ftraffic, n, rate, suffix)
        await slack.wait_answers(ctx.http, ftokens, limit_s=60)
        floor_totals = [slack.answers[t].at - due[t] for t in ftokens if t in slack.answers]

    agent = statistics.median(runs)
    over = [t - agent for t in bot_totals]
    adk_sum = infra.counter_sum(text1, "slackbot_adk_run_seconds_sum") - infra.counter_sum(
        text0, "slackbot_adk_run_seconds_sum")
    adk_count = infra.counter_sum(text1, "slackbot_adk_run_seconds_count") - infra.counter_sum(
        text0, "slackbot_adk_run_seconds_count")
    return {
        "turns": n,
        "rate": rate,
        "agent_sleep_ms": ms(agent_sleep),
        "agent_run_p50_ms": ms(agent),
        "agent_run_p99_ms": ms(percentile(runs, 0.99)),
        "bot_adk_run_mean_ms": ms(adk_sum / adk_count) if adk_count else float("nan"),
        "bot_total_p50_ms": ms(percentile(bot_totals, 0.5)),
        "bot_total_p99_ms": ms(percentile(bot_totals, 0.99)),
        "overhead_p50_ms": ms(percentile(over, 0.5)),
        "overhead_p99_ms": ms(percentile(over, 0.99)),
        "floor_total_p50_ms": ms(percentile(floor_totals, 0.5)),
        "floor_total_p99_ms": ms(percentile(floor_totals, 0.99)),
        "floor_answered": len(floor_totals),
        "ratio_p50": round(percentile(bot_totals, 0.5) / percentile(floor_totals, 0.5), 3),
        "all_answered": ok,
        "errors": len(result.errors),
        **bot_tally,
    }


# ---- 4. many concurrent threads with a slow agent -----------------------------------------------


async def concurrent_threads(ctx: Ctx, threads: int, agent_sleep: float) -> dict[str, Any]:
    settings = {"worker_concurrency": str(max(1000, threads + 100))}
    async with stack(ctx, "concurrent", **settings) as (slack, bots, _):
        traffic = Traffic("T", channels=100, seed=4)
        await warm(ctx, slack, bots, traffic, 4)
        pid = infra.bot_pid(bots[0])
        groups = [traffic.mention(f" sleep={agent_sleep:g}")[1] for _ in range(threads)]
        tokens = turn_tokens(groups)
        cpu0 = {p: infra.cpu_seconds(p) for p in (pid, ctx.adk_pid, slack.pid)}
        with infra.RssSampler([pid, ctx.adk_pid]) as rss:
            result = await burst(ctx.http, urls(bots), groups, in_flight=64, limit_s=120)
            ok = await slack.wait_answers(ctx.http, tokens, limit_s=agent_sleep + 120)
        await asyncio.sleep(0.5)
        await slack.poll(ctx.http)
        cpu = {p: round(infra.cpu_seconds(p) - c, 2) for p, c in cpu0.items()}
        answered = [slack.answers[t].at for t in tokens if t in slack.answers]
        wall = (max(answered) - result.first_sent) if answered else float("nan")
        return {
            "threads": threads,
            "agent_sleep_s": agent_sleep,
            "wall_s": round(wall, 2),
            "intake_s": round(result.last_acked - result.first_sent, 2),
            "peak_rss_mb": round(infra.proc_status_kb(pid, "VmHWM") / 1024, 1),
            "sampled_rss_mb": round(rss.peak_kb[pid] / 1024, 1),
            "adk_rss_mb": round(rss.peak_kb[ctx.adk_pid] / 1024, 1),
            "cpu_s_bot": cpu[pid],
            "cpu_s_adk": cpu[ctx.adk_pid],
            "cpu_s_fake_slack": cpu[slack.pid],
            "all_answered": ok,
            "errors": len(result.errors),
            **tally(slack, tokens),
        }


async def floor_concurrent(ctx: Ctx, threads: int, agent_sleep: float) -> dict[str, Any]:
    """Figure 4's floor: the same 1,000 slow turns done directly (create, /run_sse, post),
    all at once, with no bot: what ADK, the fake Slack and this machine need by themselves."""
    slack = await SlackProcess.start()
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=connector, trust_env=False,
                                 timeout=aiohttp.ClientTimeout(total=agent_sleep + 120))
    try:
        traffic = Traffic("Y", channels=100, seed=8)
        tokens = [traffic.token() for _ in range(threads)]
        slack.known |= set(tokens)
        cpu0 = infra.cpu_seconds(ctx.adk_pid)
        async with steady_gc():
            started = time.time()
            await asyncio.wait_for(asyncio.gather(*(
                floor_turn(http, ctx.adk_url, slack, f"floorc-{t}-{secrets.token_hex(4)}",
                           traffic.channel(),
                           f"{time.time():.6f}", f"Alice: {t} sleep={agent_sleep:g}")
                for t in tokens)), timeout=agent_sleep + 120)
        await slack.wait_answers(ctx.http, set(tokens), limit_s=30)
        answered = [slack.answers[t].at for t in tokens if t in slack.answers]
        return {
            "threads": threads,
            "answered": len(answered),
            "wall_s": round(max(answered) - started, 2) if answered else float("nan"),
            "cpu_s_adk": round(infra.cpu_seconds(ctx.adk_pid) - cpu0, 2),
        }
    finally:
        await http.close()
        slack.stop()


# ---- 5. throughput with 1..3 bot processes ------------------------------------------------------


async def scale(ctx: Ctx, processes: int, turns: int, redis_url: str = infra.REDIS_URL,
                name: str = "scale", **settings: str) -> dict[str, Any]:
    """Answered turns per second for a burst of `turns` new threads over `processes` bot
    processes on `redis_url` with `settings` (figure 7: a Redis Cluster)."""
    async with stack(ctx, f"{name}{processes}", bots=processes, redis_url=redis_url,
                     **settings) as (slack, bots, _):
        traffic = Traffic("S", channels=100, seed=5)
        await warm(ctx, slack, bots, traffic, 2 * processes)
        groups = [traffic.mention()[1] for _ in range(turns)]
        index = 0
        for group in groups:  # round-robin by request: twins land on different processes
            for req in group:
                req.target = index % processes
                index += 1
        tokens = turn_tokens(groups)
        cpu0 = infra.cpu_seconds(ctx.adk_pid)
        result = await burst(ctx.http, urls(bots), groups, in_flight=64, limit_s=120)
        ok = await slack.wait_answers(ctx.http, tokens, limit_s=120)
        cpu_adk = infra.cpu_seconds(ctx.adk_pid) - cpu0
        await asyncio.sleep(0.5)
        await slack.poll(ctx.http)
        answered = [slack.answers[t].at for t in tokens if t in slack.answers]
        wall = (max(answered) - result.first_sent) if answered else float("nan")
        return {
            "processes": processes,
            "turns": turns,
            "wall_s": round(wall, 2),
            "turns_per_s": round(len(answered) / wall, 1) if answered else 0.0,
            "adk_cpu_s_per_turn_ms": ms(cpu_adk / max(1, len(answered))),
            "all_answered": ok,
            "errors": len(result.errors),
            **tally(slack, tokens),
        }


async def floor_throughput(ctx: Ctx, turns: int) -> dict[str, Any]:
    """ADK alone (the floor turn) at 64 in flight: what the bot's throughput is bounded by."""
    slack = await SlackProcess.start()
    try:
        traffic = Traffic("X", channels=100, seed=7)
        slots = asyncio.Semaphore(64)

        async def one(token: str) -> None:
            async with slots:
                await floor_turn(ctx.http, ctx.adk_url, slack,
                                 f"floor-{token}-{secrets.token_hex(4)}",
                                 traffic.channel(), f"{time.time():.6f}", f"Alice: {token}")

        tokens = [traffic.token() for _ in range(turns)]
        started = time.time()
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in tokens)), timeout=120)
        await slack.wait_answers(ctx.http, set(tokens), limit_s=30)
        last = max(a.at for a in slack.answers.values())
        return {"turns": turns, "turns_per_s": round(turns / (last - started), 1)}
    finally:
        slack.stop()


# ---- 6. Redis commands per turn and per event ---------------------------------------------------


async def redis_commands(ctx: Ctx, n: int) -> dict[str, Any]:
    """Commands and round trips, counted by a proxy that only this bot talks through; the
    bot's own background traffic (measured while idle) is subtracted."""
    proxy = RedisProxy()
    await proxy.start()
    try:
        return await _redis_commands(ctx, n, proxy)
    finally:
        await proxy.stop()


async def _redis_commands(ctx: Ctx, n: int, proxy: RedisProxy) -> dict[str, Any]:
    async with stack(ctx, "redis", redis_url=proxy.url) as (slack, bots, _):
        traffic = Traffic("R", channels=100, seed=6)
        await warm(ctx, slack, bots, traffic, 2)
        await asyncio.sleep(1.0)
        info_clients = int(ctx.redis.info("clients").get("connected_clients", 0))
        idle_seconds = 1.0 if ctx.quick else 3.0
        c0, r0 = proxy.snapshot()
        await asyncio.sleep(idle_seconds)
        c1, r1 = proxy.snapshot()
        idle_cmds, idle_trips = (c1 - c0) / idle_seconds, (r1 - r0) / idle_seconds

        async def measure(groups: list[list[Request]], expect: set[str]
                          ) -> tuple[float, float, Counter[str]]:
            started = time.monotonic()
            before_cmds, before_trips = proxy.snapshot()
            before = Counter(proxy.commands)
            result = await burst(ctx.http, urls(bots), groups, in_flight=4, limit_s=120)
            if result.errors:
                raise RuntimeError(f"redis phase: {result.errors[:3]}")
            if expect and not await slack.wait_answers(ctx.http, expect, limit_s=60):
                raise RuntimeError("redis phase: turns not answered")
            await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            cmds, trips = proxy.snapshot()
            per_cmd = (cmds - before_cmds - idle_cmds * elapsed) / len(groups)
            per_trip = (trips - before_trips - idle_trips * elapsed) / len(groups)
            return per_cmd, per_trip, proxy.commands - before

        made = [traffic.mention() for _ in range(n)]
        new_groups = [pair for _, pair in made]
        new_cmds, new_trips, new_delta = await measure(new_groups, turn_tokens(new_groups))
        follow_groups = [[traffic.followup(thread)] for thread, _ in made]
        follow_cmds, follow_trips, _ = await measure(follow_groups, turn_tokens(follow_groups))
        chatter_groups = [[traffic.chatter_top() if i % 2 else traffic.chatter_reply()]
                          for i in range(n)]
        chat_cmds, chat_trips, chat_delta = await measure(chatter_groups, set())
        return {
            "turns": n,
            "idle_commands_per_s": round(idle_cmds, 1),
            "idle_round_trips_per_s": round(idle_trips, 1),
            "redis_clients_on_server": info_clients,
            "per_new_thread_turn": round(new_cmds, 1),
            "round_trips_per_new_thread_turn": round(new_trips, 1),
            "per_followup_turn": round(follow_cmds, 1),
            "round_trips_per_followup_turn": round(follow_trips, 1),
            "per_ignored_event": round(chat_cmds, 1),
            "round_trips_per_ignored_event": round(chat_trips, 1),
            "new_thread_breakdown": {k: round(v / n, 2) for k, v in new_delta.most_common()},
            "ignored_event_breakdown": {k: round(v / n, 2) for k, v in chat_delta.most_common()},
        }

"""Load: 1,000 signed events through the intake of one bot process, and 200 concurrent threads
through to their answers. Each test prints its figures (lost, duplicated, latency, wall time)
on one `LOAD ...` line, shown even without `-s`.

Every user message carries a unique token (`L0001`, `M0001`); the test agent echoes it in
`said=<speaker>: <text>`, so each of the bot's replies maps back to the message it answers."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import BotProcess
from tests.waiting import eventually

SAID_RE = re.compile(r"^said=[^:\n]*: ([A-Z]\d{4})\b", re.MULTILINE)
USERS = ("U1", "U2")
POLL_SECONDS = 0.2


# ---- the plan: what is sent, and which messages must be answered ---------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST to the intake; `retry` sets X-Slack-Retry-Num (a redelivery)."""

    payload: dict[str, Any]
    retry: int | None = None


Step = list[Delivery]  # sent concurrently (a mention's app_mention + message twins)
Script = list[Step]  # sent one step after the other (one Slack thread's story)


@dataclass
class Question:
    token: str
    channel: str
    thread_ts: str
    ts: str


@dataclass
class Plan:
    scripts: list[Script] = field(default_factory=list)
    questions: dict[str, Question] = field(default_factory=dict)  # token -> question
    threads: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # -> tokens

    @property
    def events(self) -> int:
        return sum(len(step) for script in self.scripts for step in script)

    def expect(self, question: Question) -> None:
        self.questions[question.token] = question
        self.threads.setdefault((question.channel, question.thread_ts), []).append(
            question.token
        )


class PlanBuilder:
    """Builds Slack-shaped traffic: the messages are stored in the fake Slack (history reads
    see them) and turned into the events real Slack would deliver for them."""

    def __init__(self, slack: FakeSlack, rng: random.Random, token_prefix: str) -> None:
        self.slack = slack
        self.rng = rng
        self.token_prefix = token_prefix
        self.plan = Plan()
        self._tokens = 0
        self._retries: dict[str, int] = {}  # event_id -> last X-Slack-Retry-Num sent

    def token(self) -> str:
        self._tokens += 1
        return f"{self.token_prefix}{self._tokens:04d}"

    @staticmethod
    def channel_type(channel: str) -> str:
        return "group" if channel.startswith("G") else "channel"

    def user_message(self, channel: str, *, user: str, text: str, thread_ts: str | None,
                     mention: bool) -> tuple[str, Step]:
        if mention:
            text = f"<@{self.slack.bot_user_id}> {text}"
        ts = self.slack.add_message(channel, user=user, text=text, thread_ts=thread_ts)
        step = [Delivery(ev.envelope(ev.message(
            channel=channel, user=user, text=text, ts=ts, thread_ts=thread_ts,
            channel_type=self.channel_type(channel))))]
        if mention:
            step.append(Delivery(ev.envelope(ev.app_mention(
                channel=channel, user=user, text=text, ts=ts, thread_ts=thread_ts))))
            self.rng.shuffle(step)
        return ts, step

    def redelivery(self, sent: list[Delivery]) -> Delivery:
        """Slack delivering an event again (its first delivery timed out, say)."""
        original = self.rng.choice(sent)
        event_id = str(original.payload["event_id"])
        retry = self._retries.get(event_id, 0) + 1
        self._retries[event_id] = retry
        return Delivery(original.payload, retry=retry)

    def thread_noise(self, channel: str, root: str, asked: list[str]) -> Delivery:
        """Something in an engaged thread that must not be answered."""
        kind = self.rng.randrange(5)
        ctype = self.channel_type(channel)
        event: dict[str, Any]
        if kind == 0:
            event = ev.bot_message(channel=channel, text="another bot chimes in", thread_ts=root,
                                   channel_type=ctype)
        elif kind == 1:
            event = ev.message(channel=channel, user=self.slack.bot_user_id, text="my own echo",
                               thread_ts=root, bot_id=self.slack.bot_id, channel_type=ctype)
        elif kind == 2:
            event = ev.message_changed(channel=channel, ts=self.rng.choice(asked), user="U1",
                                       text="edited text", thread_ts=root, channel_type=ctype)
        elif kind == 3:
            event = ev.message_deleted(channel=channel, deleted_ts=self.rng.choice(asked),
                                       user="U2", thread_ts=root, channel_type=ctype)
        else:
            event = ev.message(channel=channel, user="U2", text="joined", thread_ts=root,
                               subtype="channel_join", channel_type=ctype)
        return Delivery(ev.envelope(event))

    def engaged_thread(self, channel: str, *, followups: int, first_suffix: str = "",
                       p_mention: float = 0.0, p_redeliver: float = 0.0,
                       p_noise: float = 0.0, p_retry_only: float = 0.0) -> Script:
        """A thread started by a mention, then `followups` follow-ups from anyone."""
        rng = self.rng
        token = self.token()
        root, step = self.user_message(channel, user=rng.choice(USERS),
                                       text=f"{token}{first_suffix}", thread_ts=None,
                                       mention=True)
        self.plan.expect(Question(token, channel, root, root))
        script: Script = [step]
        sent = list(step)
        asked = [root]
        for _ in range(followups):
            token = self.token()
            mention = rng.random() < p_mention
            ts, step = self.user_message(channel, user=rng.choice(USERS), text=token,
                                         thread_ts=root, mention=mention)
            if not mention and rng.random() < p_retry_only:
                # The first delivery was lost in transit: only Slack's retry arrives.
                step = [Delivery(step[0].payload, retry=1)]
                self._retries[str(step[0].payload["event_id"])] = 1
            self.plan.expect(Question(token, channel, root, ts))
            script.append(step)
            sent.extend(step)
            asked.append(ts)
            if rng.random() < p_redeliver:
                script.append([self.redelivery(sent)])
            if rng.random() < p_noise:
                script.append([self.thread_noise(channel, root, asked)])
        if rng.random() < p_redeliver:
            script.append([self.redelivery(sent)])
        return script

    def loose_noise(self, channel: str, human_roots: list[str]) -> Script:
        """One event outside any engaged thread; none of them may be answered."""
        kind = self.rng.randrange(5)
        ctype = self.channel_type(channel)
        user = self.rng.choice(USERS)
        event: dict[str, Any]
        if kind == 0:  # top-level chatter without a mention
            ts = self.slack.add_message(channel, user=user, text="coffee anyone?")
            event = ev.message(channel=channel, user=user, text="coffee anyone?", ts=ts,
                               channel_type=ctype)
        elif kind == 1:  # a reply in a thread the bot was never mentioned in
            root = self.rng.choice(human_roots)
            ts = self.slack.add_message(channel, user=user, text="human reply", thread_ts=root)
            event = ev.message(channel=channel, user=user, text="human reply", ts=ts,
                               thread_ts=root, channel_type=ctype)
        elif kind == 2:
            event = ev.bot_message(channel=channel, text="deploy finished", channel_type=ctype)
        elif kind == 3:
            event = ev.channel_join(channel=channel, user=user, channel_type=ctype)
        else:
            event = {"type": "reaction_added", "user": user, "reaction": "eyes",
                     "item": {"type": "message", "channel": channel, "ts": ev.next_ts()},
                     "event_ts": ev.next_ts()}
        return [[Delivery(ev.envelope(event))]]


# ---- sending ----------------------------------------------------------------------------------


class Sender:
    """Sends scripts concurrently, with at most `in_flight` requests on the wire; records
    every ack's latency and status."""

    def __init__(self, bot: BotProcess, in_flight: int) -> None:
        self.bot = bot
        self.slots = asyncio.Semaphore(in_flight)
        self.latencies: list[float] = []
        self.bad: list[str] = []
        self.acked_at: dict[str, float] = {}  # message ts -> wall time its step was acked

    async def deliver(self, delivery: Delivery) -> None:
        async with self.slots:
            started = time.perf_counter()
            try:
                response = await self.bot.send(delivery.payload, retry_num=delivery.retry)
            except httpx.HTTPError as exc:
                self.bad.append(f"{type(exc).__name__}: {exc}")
                return
            self.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            self.bad.append(f"HTTP {response.status_code}: {response.text[:200]}")

    async def run_script(self, script: Script) -> None:
        for step in script:
            await asyncio.gather(*(self.deliver(d) for d in step))
            now = time.time()
            for delivery in step:
                ts = delivery.payload["event"].get("ts")
                if isinstance(ts, str):
                    self.acked_at.setdefault(ts, now)

    async def run(self, scripts: list[Script]) -> None:
        await asyncio.gather(*(self.run_script(s) for s in scripts))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


# ---- counting the answers ---------------------------------------------------------------------


@dataclass
class Tally:
    expected: int
    answered_once: int
    lost: list[str]
    duplicated: dict[str, int]
    unexpected: list[str]  # replies to something that is not an expected question
    unreadable: list[str]  # replies without a `said=` line (error notices, say)
    out_of_order: list[str]
    first_reply_ts: dict[tuple[str, str], str]

    def line(self) -> str:
        return (f"expected={self.expected} answered={self.answered_once} "
                f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"unexpected={len(self.unexpected)} errors={len(self.unreadable)} "
                f"out_of_order={len(self.out_of_order)}")

    def details(self) -> str:
        return (f"lost={self.lost[:20]} duplicated={dict(list(self.duplicated.items())[:20])} "
                f"unexpected={self.unexpected[:20]} errors={self.unreadable[:5]} "
                f"out_of_order={self.out_of_order[:5]}")


def tally(slack: FakeSlack, plan: Plan) -> Tally:
    counts: Counter[str] = Counter()
    per_thread: dict[tuple[str, str], list[str]] = {}
    first_reply_ts: dict[tuple[str, str], str] = {}
    unreadable: list[str] = []
    for channel, messages in list(slack.messages.items()):
        for msg in messages:  # stored in ts order, i.e. the order the bot posted them
            if msg.get("bot_id") != slack.bot_id:
                continue
            thread = (channel, str(msg.get("thread_ts") or ""))
            first_reply_ts.setdefault(thread, msg["ts"])
            text = message_text(msg)
            match = SAID_RE.search(text)
            if match is None:
                unreadable.append(text[:160])
                continue
            counts[match.group(1)] += 1
            per_thread.setdefault(thread, []).append(match.group(1))
    lost = [t for t in plan.questions if counts[t] == 0]
    duplicated = {t: n for t, n in counts.items() if n > 1 and t in plan.questions}
    unexpected = [t for t in counts if t not in plan.questions]
    out_of_order = []
    for thread, tokens in plan.threads.items():
        seen = list(dict.fromkeys(per_thread.get(thread, [])))  # first answer of each
        if seen != [t for t in tokens if t in seen]:
            out_of_order.append(f"{thread}: asked {tokens} answered {seen}")
    answered_once = sum(1 for t in plan.questions if counts[t] == 1)
    return Tally(len(plan.questions), answered_once, lost, duplicated, unexpected, unreadable,
                 out_of_order, first_reply_ts)


async def wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    """Whether `predicate` came true within `timeout` seconds."""
    try:
        await eventually(predicate, timeout=timeout, interval=POLL_SECONDS)
    except AssertionError:
        return False
    return True


def bot_trouble(bot: BotProcess) -> Counter[str]:
    """The bot's warnings and errors, counted by message (the first 60 characters)."""
    return Counter(
        str(r.get("message"))[:60] for r in bot.log_records()
        if r.get("level") in ("warning", "error", "critical")
    )


async def bot_metrics(bot: BotProcess) -> tuple[dict[str, int], str]:
    """From the bot's /metrics: `slackbot_events_total` summed by outcome, and the p50/p99
    bucket of `slackbot_ack_seconds` (the intake's own time, measured inside the bot)."""
    text = (await bot.http.get(f"{bot.url}/metrics")).text
    outcomes: Counter[str] = Counter()
    for match in re.finditer(r'^slackbot_events_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$',
                             text, re.MULTILINE):
        outcomes[match.group(1)] += int(float(match.group(2)))
    buckets = [(float(le), float(n)) for le, n in re.findall(
        r'^slackbot_ack_seconds_bucket\{le="([^"+]+)"\} (\S+)$', text, re.MULTILINE)]
    total = max((n for _, n in buckets), default=0.0)

    def bucket(q: float) -> str:
        for le, n in buckets:
            if total and n >= q * total:
                return f"<={le * 1000:g}ms"
        return ">10s"

    return dict(outcomes), f"server_ack_p50{bucket(0.5)} server_ack_p99{bucket(0.99)}"


def report(capsys: pytest.CaptureFixture[str], *lines: str) -> None:
    with capsys.disabled():
        for line in lines:
            print(line, flush=True)


# ---- 1. the intake takes 1,000 events -----------------------------------------------------------

TOTAL_EVENTS = 1000
ENGAGED_THREADS = 150
IN_FLIGHT = 50


async def test_intake_takes_1000_events_without_loss(
    slack: FakeSlack, bot: BotProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channels = ["C1", "G1", "C2", "C3"]
    slack.add_channel("C2", "costs")
    slack.add_channel("C3", "platform")
    rng = random.Random(20240611)
    builder = PlanBuilder(slack, rng, "L")
    human_roots = {c: [slack.add_message(c, user="U1", text="a human thread") for _ in range(5)]
                   for c in channels}
    for i in range(ENGAGED_THREADS):
        builder.plan.scripts.append(builder.engaged_thread(
            channels[i % len(channels)], followups=rng.randint(1, 3), p_mention=0.15,
            p_redeliver=0.25, p_noise=0.15, p_retry_only=0.05,
        ))
    plan = builder.plan
    assert TOTAL_EVENTS - plan.events >= 100, f"the engaged threads use {plan.events} events"
    while plan.events < TOTAL_EVENTS:
        channel = rng.choice(channels)
        plan.scripts.append(builder.loose_noise(channel, human_roots[channel]))
    rng.shuffle(plan.scripts)
    assert plan.events == TOTAL_EVENTS

    sender = Sender(bot, IN_FLIGHT)
    started = time.monotonic()
    await asyncio.wait_for(sender.run(plan.scripts), timeout=60)
    send_seconds = time.monotonic() - started
    answered = await wait_until(
        lambda: not tally(slack, plan).lost, timeout=60
    )
    drain_seconds = time.monotonic() - started
    await bot.wait_idle(timeout=15)  # a late duplicate answer would be in by now
    result = tally(slack, plan)
    outcomes, server_ack = await bot_metrics(bot)
    trouble = bot_trouble(bot)
    posts = len(slack.calls_to("chat.postMessage"))
    p50, p99 = percentile(sender.latencies, 0.50), percentile(sender.latencies, 0.99)
    report(
        capsys,
        "",
        f"LOAD intake: events={len(sender.latencies) + len(sender.bad)} "
        f"expected={result.expected} answered={result.answered_once} "
        f"lost={len(result.lost)} duplicated={len(result.duplicated)} "
        f"ack_p50={p50 * 1000:.1f}ms ack_p99={p99 * 1000:.1f}ms "
        f"ack_max={max(sender.latencies) * 1000:.1f}ms",
        f"LOAD intake detail: {server_ack} {result.line()} non_200={len(sender.bad)} "
        f"send={send_seconds:.1f}s ({TOTAL_EVENTS / send_seconds:.0f} events/s, "
        f"{IN_FLIGHT} in flight) all_answered_after={drain_seconds:.1f}s "
        f"intake_outcomes={outcomes} slack_calls={len(slack.calls)} posts={posts} "
        f"bot_warnings={dict(trouble)}",
    )
    assert not sender.bad, sender.bad[:10]
    assert answered, f"not all answered within 60s: {result.details()}\n{trouble}"
    assert not result.lost and not result.duplicated, result.details()
    assert not result.unexpected and not result.unreadable, result.details()
    assert not result.out_of_order, result.details()
    assert outcomes.get("queued") == result.expected, outcomes


# ---- 2. 200 threads at once -------------------------------------------------------------------

THREADS = 200
# Each thread's first turn runs this long, and does not end before every event is sent (it
# waits for a gate the test opens then): "follow-ups were queued while the first turn ran"
# holds however long sending takes on a busy machine. Serialized turns would still take
# 200 x 8 s.
FIRST_TURN_SECONDS = 8


async def test_200_concurrent_threads_are_all_answered(
    slack: FakeSlack, bot: BotProcess,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    rng = random.Random(20240612)
    builder = PlanBuilder(slack, rng, "M")
    gate = tmp_path / "all-sent"
    for i in range(THREADS):
        followups = rng.randint(1, 2) if i % 2 == 0 else 0
        builder.plan.scripts.append(builder.engaged_thread(
            "C1", followups=followups, first_suffix=f" sleep={FIRST_TURN_SECONDS} hold={gate}"
        ))
    plan = builder.plan
    followup_questions = [q for q in plan.questions.values() if q.ts != q.thread_ts]

    sender = Sender(bot, in_flight=100)
    started = time.monotonic()
    try:
        await asyncio.wait_for(sender.run(plan.scripts), timeout=30)
    finally:
        gate.touch()  # the first turns may end
    send_seconds = time.monotonic() - started
    answered = await wait_until(lambda: not tally(slack, plan).lost, timeout=45)
    wall = time.monotonic() - started
    await bot.wait_idle(timeout=15)  # a late duplicate answer would be in by now
    result = tally(slack, plan)
    trouble = bot_trouble(bot)
    _outcomes, server_ack = await bot_metrics(bot)
    # Each follow-up was in before its thread's first answer, i.e. while the first turn ran.
    during_first_turn = sum(
        1 for q in followup_questions
        if (q.channel, q.thread_ts) in result.first_reply_ts
        and sender.acked_at.get(q.ts, float("inf"))
        < float(result.first_reply_ts[(q.channel, q.thread_ts)])
    )
    p50, p99 = percentile(sender.latencies, 0.50), percentile(sender.latencies, 0.99)
    report(
        capsys,
        "",
        f"LOAD threads: threads={THREADS} messages={result.expected} "
        f"lost={len(result.lost)} duplicated={len(result.duplicated)} wall={wall:.1f}s",
        f"LOAD threads detail: {result.line()} events={len(sender.latencies)} "
        f"non_200={len(sender.bad)} send={send_seconds:.1f}s "
        f"followups_during_first_turn={during_first_turn}/{len(followup_questions)} "
        f"ack_p50={p50 * 1000:.1f}ms ack_p99={p99 * 1000:.1f}ms {server_ack} "
        f"slack_calls={len(slack.calls)} bot_warnings={dict(trouble)}",
    )
    assert not sender.bad, sender.bad[:10]
    assert answered, f"not all answered within 45s: {result.details()}\n{trouble}"
    assert not result.lost and not result.duplicated, result.details()
    assert not result.unexpected and not result.unreadable, result.details()
    assert not result.out_of_order, result.details()
    assert during_first_turn >= 0.9 * len(followup_questions)
    assert wall < 30, f"200 {FIRST_TURN_SECONDS}-second threads took {wall:.1f}s: serialized?"

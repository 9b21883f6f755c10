"""Prometheus metrics, in a registry of their own per process (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.usage import clean_name

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The `model` label of slackbot_tokens_total takes the first this many model names a
# process sees; the tokens of any other model count under OTHER_MODELS. The names come from
# the agent's events, so their number is bounded here, as Prometheus needs a label's values
# to be (https://prometheus.io/docs/practices/naming/#labels).
MAX_TOKEN_MODELS = 20
OTHER_MODELS = "other"


class Metrics:
    # Long on purpose: one declaration per metric (name, help text, labels, buckets);
    # together they are the list of what /metrics exports.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "slackbot_events_total", "Slack events received, by type and outcome",
            ["type", "outcome"], registry=r,
        )
        self.duplicates = Counter(
            "slackbot_duplicates_dropped_total", "Redeliveries and mention/message pairs dropped",
            registry=r,
        )
        self.ack_latency = Histogram(
            "slackbot_ack_seconds", "Time from request to ack at the intake",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.turns = Counter(
            "slackbot_turns_total", "Turns finished, by outcome", ["outcome"], registry=r
        )
        # Many workspaces: the same, by the installation the turn came through (its team,
        # or its org for an org-wide install).
        self.workspace_turns = Counter(
            "slackbot_workspace_turns_total",
            "Turns finished, by installation (many workspaces) and outcome",
            ["workspace", "outcome"], registry=r,
        )
        self.tokens = Counter(
            "slackbot_tokens_total",
            "Tokens the agent's model calls reported (usageMetadata), by model and kind "
            "(prompt, cached, tool_use, candidates, thoughts)", ["model", "kind"], registry=r,
        )
        self.turns_given_up = Counter(
            "slackbot_turns_given_up_total",
            "Turns given up unanswered: attempts at them stopped their worker "
            "MAX_TURN_ATTEMPTS times", registry=r,
        )
        self.threads_taken_over = Counter(
            "slackbot_threads_taken_over_total",
            "Threads taken over from a worker whose heartbeat expired (it died mid-turn)",
            registry=r,
        )
        self.turn_seconds = Histogram(
            "slackbot_turn_seconds", "Time of one turn in the worker", buckets=TURN_BUCKETS,
            registry=r,
        )
        self.turns_running = Gauge(
            "slackbot_turns_running", "Turns being worked on now", registry=r
        )
        self.queue_depth = Gauge(
            "slackbot_work_pending", "Doorbells pending in the work stream", registry=r
        )
        # Feedback (bot/slack/feedback.py): new or changed 👍/👎 votes; a repeated click on
        # the same button is not counted again.
        self.feedback = Counter(
            "slackbot_feedback_total", "Feedback votes on answers", ["rating"], registry=r
        )
        self.adk_seconds = Histogram(
            "slackbot_adk_run_seconds", "Time of one ADK run (/run_sse), by result",
            ["result"], buckets=TURN_BUCKETS, registry=r,
        )
        self.adk_first_event_seconds = Histogram(
            "slackbot_adk_first_event_seconds", "Time from sending a run to ADK's first event",
            buckets=TURN_BUCKETS, registry=r,
        )
        self.turn_wait_seconds = Histogram(
            "slackbot_turn_wait_seconds",
            "Time a turn waited between intake and its worker starting it (queue + lock)",
            buckets=TURN_BUCKETS, registry=r,
        )
        self.slack_errors = Counter(
            "slackbot_slack_api_errors_total", "Slack Web API calls that failed, by method",
            ["method", "error"], registry=r,
        )
        self.slack_rate_limited = Counter(
            "slackbot_slack_rate_limited_total",
            "Slack 429 answers waited out (Retry-After) before retrying", registry=r,
        )
        self.stream_fallbacks = Counter(
            "slackbot_stream_fallbacks_total",
            "Live answers moved from Slack's native streaming to a placeholder, by reason",
            ["reason"], registry=r,
        )

        # Limits (bot/limits.py): messages refused because their thread's queue was full
        # (busy, at intake) or their author was over the rate limit (rate_limited, at the
        # worker); and the private notes that tell the author of a refusal at intake.
        self.turns_refused = Counter(
            "slackbot_turns_refused_total", "Messages not passed to the agent, by limit",
            ["reason"], registry=r,
        )
        # Durable acks (REDIS_MIN_REPLICAS): events Slack was not acked for, because fewer
        # replicas than asked confirmed them in time; Slack delivers them again.
        self.acks_withheld = Counter(
            "slackbot_acks_withheld_total",
            "Events not acked to Slack: fewer than REDIS_MIN_REPLICAS replicas confirmed them "
            "within REDIS_MIN_REPLICAS_TIMEOUT_MS", registry=r,
        )
        self.notes = Counter(
            "slackbot_private_notes_total",
            "Private notes sent off the ack path, by outcome (sent, failed, dropped)",
            ["outcome"], registry=r,
        )

        self._token_models: set[str] = set()

    def count_tokens(self, model: str, kind: str, count: int) -> None:
        """Add a turn's tokens of a model and kind to slackbot_tokens_total, the model
        named as the usage report names it (bot/usage.py clean_name)."""
        name = clean_name(model)
        if name not in self._token_models:
            if len(self._token_models) >= MAX_TOKEN_MODELS:
                name = OTHER_MODELS
            else:
                self._token_models.add(name)
        self.tokens.labels(name, kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Controls in Slack: the private note to someone a control refuses, the Stop button and
Slack's own stop on a streamed answer, and the /adk-reset slash command (who may use a
control: `bot/control_access.py`).

Stop (a "stop" message, a Stop button, Slack's own stop on a streamed answer), reset (a
"reset" message, /adk-reset) and the feedback buttons obey the access policy of questions
(`bot.access.decide_control`), user groups included. Slack does not run slash commands
inside threads, so /adk-reset in a DM resets the DM conversation, and elsewhere it explains
how to reset a thread."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Allow
from bot.control_access import ControlAccess
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.routing import install_of_request, thread_owner
from bot.slack.stream import STOP_ACTION_ID
from bot.stops import Stops
from bot.store.redis_store import Store
from bot.turns import thread_key

log = logging.getLogger("bot.controls")

RESET_COMMAND = "/adk-reset"
THREAD_HINT = (
    "To start a new conversation in a thread, reply `reset` in that thread "
    "(mentioning me if follow-ups need a mention there)."
)
# A button click or a stop event is acked only after its listener: the note must not hold it
# past Slack's 3-second budget.
NOTE_TIMEOUT_SECONDS = 2.0

async def tell_refused(client: AsyncWebClient, *, channel: str, user: str,
                       thread_ts: str | None, text: str) -> None:
    """Tell `user`, and only them (chat.postEphemeral,
    https://docs.slack.dev/reference/methods/chat.postEphemeral), that a control refused
    them. Never raises: the refusal stands whether or not the note arrives."""
    try:
        async with asyncio.timeout(NOTE_TIMEOUT_SECONDS):
            # slack_sdk leaves a None thread_ts out of the request.
            await client.chat_postEphemeral(channel=channel, user=user,
                                            text=markdown_to_mrkdwn(text),
                                            thread_ts=thread_ts or None)
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
        log.warning("could not tell a user a control was refused: %s", error)


def register_reset_command(app: AsyncApp, store: Store,
                           controls: ControlAccess | None = None, *,
                           installed: bool = False) -> None:
    """`/adk-reset` in a DM; `installed`: many workspaces (the thread keys' owner is the
    installation's)."""

    async def on_reset(ack: AsyncAck, body: dict[str, Any]) -> None:
        channel = str(body.get("channel_id") or "")
        team = thread_owner(body, installed=installed)
        user = str(body.get("user_id") or "")
        if controls is not None and not isinstance(
            await controls.decide(control=RESET_COMMAND, channel=channel, user=user,
                                  install=install_of_request(body)), Allow
        ):
            # A slash command's response is seen only by the person who ran it.
            await ack(markdown_to_mrkdwn(controls.denied_message))
            return
        if channel.startswith("D") and team:
            key = thread_key(team, channel, None)
            await store.reset_session(key, f"{time.time():.6f}")
            await ack("Started a new conversation. I won't use our earlier messages as context.")
            return
        await ack(THREAD_HINT)

    app.command(RESET_COMMAND)(on_reset)


def register_stop_controls(app: AsyncApp, *, controls: ControlAccess, stops: Stops,
                           installed: bool = False) -> None:
    """Slack's own stop on a streamed answer (`agent_session_stopped`) and the Stop button
    under an answer. A user `controls` refuses is told so, and nothing stops. `installed`:
    many workspaces (the thread keys' owner is the installation's)."""

    async def on_agent_stop(body: dict[str, Any], client: AsyncWebClient) -> None:
        event = body.get("event") or {}
        team = thread_owner(body, installed=installed)
        channel = str(event.get("channel") or "")
        thread_ts, user = event.get("thread_ts"), str(event.get("user") or "")
        if not (team and channel and isinstance(thread_ts, str)):
            return
        key = thread_key(team, channel, thread_ts)
        verdict = await controls.decide(control="a Slack stop", channel=channel, user=user,
                                        install=install_of_request(body),
                                        log_extra={"thread_key": key})
        if not isinstance(verdict, Allow):
            await tell_refused(client, channel=channel, user=user, thread_ts=thread_ts,
                               text=controls.denied_message)
            return
        # Only a turn asked before the press: a late or repeated event stops no later one.
        await stops.request_stop(key, before_ts=str(event.get("event_ts") or ""))

    async def on_stop_button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
                             ) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        key, _, turn_ts = str(actions[0].get("value") or "").rpartition("|")
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        if not key:
            return
        verdict = await controls.decide(control="a Stop button", channel=channel, user=user,
                                        install=install_of_request(body),
                                        log_extra={"thread_key": key})
        if not isinstance(verdict, Allow):
            thread_ts = container.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
            await tell_refused(client, channel=channel, user=user,
                               thread_ts=thread_ts if isinstance(thread_ts, str) else None,
                               text=controls.denied_message)
            return
        # Only the turn the button is under: a late click stops nothing else.
        await stops.request_stop(key, turn_ts=turn_ts)

    app.event("agent_session_stopped")(on_agent_stop)
    app.action(STOP_ACTION_ID)(on_stop_button)

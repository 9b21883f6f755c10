"""Slack's assistant pane in DMs: suggested prompts when a user starts a thread.

Only the thread-start events are handled here. The messages a user then writes in the
assistant thread (or sends by clicking a suggested prompt) are ordinary `message.im` events,
which the intake already routes as DM thread messages: one ADK session per thread, as
everywhere else. Bolt's `AsyncAssistant` middleware is deliberately not used, because it
would take those messages away from the intake.

- `assistant_thread_started` (apps with `assistant_view`): set the suggested prompts on the
  new thread (`assistant.threads.setSuggestedPrompts` with `thread_ts`).
- `assistant_thread_context_changed`: acknowledged, nothing else (the bot does not use the
  channel the user is looking at).
- `app_home_opened` with `tab == "messages"` (apps with `agent_view`, where it replaces
  `assistant_thread_started`), only with `messages_tab=True`: set the prompts on the DM
  without a `thread_ts` (Slack documents that a `thread_ts` makes the call fail silently for
  agent apps).

Both calls need the `assistant:write` bot scope. A refusal is logged and never retried:
the event is still acknowledged, so Slack does not deliver it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("bot.assistant")

MAX_PROMPTS = 4  # Slack shows up to four suggested prompts
CALL_TIMEOUT_SECONDS = 2.5  # with process_before_response the event is acked after this


def prompt_objects(prompts: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """`[(title, message), ...]` as Slack's prompt objects, at most four."""
    return [{"title": title, "message": message} for title, message in prompts[:MAX_PROMPTS]]


async def set_suggested_prompts(
    client: AsyncWebClient,
    *,
    channel_id: str,
    thread_ts: str | None,
    prompts: Sequence[tuple[str, str]],
    title: str | None,
) -> bool:
    """Set the prompts; False (logged) when Slack refuses or does not answer in time."""
    if not prompts or not channel_id:
        return False
    try:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=channel_id, thread_ts=thread_ts, prompts=prompt_objects(prompts),
                title=title or None,
            )
        return True
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
        log.warning("could not set suggested prompts: %s", error,
                    extra={"ts": thread_ts or "", "outcome": "error"})
        return False


def register_assistant(
    app: AsyncApp,
    *,
    prompts: list[tuple[str, str]],
    title: str | None,
    messages_tab: bool = False,
) -> None:
    """Register the assistant-pane listeners. Call before any catch-all event listener.
    `messages_tab=True` also handles `app_home_opened` on the Messages tab (`agent_view`)."""
    chosen = list(prompts[:MAX_PROMPTS])

    async def on_thread_started(event: dict[str, Any], client: AsyncWebClient) -> None:
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict):
            return
        channel_id, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not isinstance(channel_id, str) or not isinstance(thread_ts, str) or not thread_ts:
            return
        await set_suggested_prompts(
            client, channel_id=channel_id, thread_ts=thread_ts, prompts=chosen, title=title
        )

    async def on_context_changed() -> None:
        return None  # acknowledged; the bot has no use for the user's current channel

    app.event("assistant_thread_started")(on_thread_started)
    app.event("assistant_thread_context_changed")(on_context_changed)

    if not messages_tab:
        return

    async def on_messages_tab(event: dict[str, Any]) -> bool:
        return event.get("tab") == "messages"

    async def on_home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        channel_id = event.get("channel")
        if isinstance(channel_id, str) and channel_id:
            await set_suggested_prompts(
                client, channel_id=channel_id, thread_ts=None, prompts=chosen, title=title
            )

    # Other tabs fall through to the next listener (the app's catch-all acks them).
    app.event("app_home_opened", matchers=[on_messages_tab])(on_home_opened)

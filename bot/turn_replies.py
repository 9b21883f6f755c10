"""What a turn tells the thread, composed: the agent's answer with its warnings, the
question the agent asks a human, and every notice and error text a user reads. Pure
functions: nothing here posts or logs; the thread's own format of an answer comes in as
`render` (`ThreadIO.answer_replies`)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from bot.adk.client import (
    AdkAuthError,
    AdkConfigError,
    AdkRefused,
    AdkTimeout,
    AdkUnavailable,
)
from bot.adk.events import CONFIRMATION, INPUT, HumanRequest, TurnResult, describe_error_code
from bot.thread_io import Attachment, Reply, code_name, plain_text

Render = Callable[[str], list[Reply]]

RESET_TEXT = (":arrows_counterclockwise: Started a new conversation in this thread. "
              "I won't use the earlier messages as context.")
STOPPED_TEXT = ":stop_button: Stopped."
NOTHING_TO_STOP_TEXT = (":stop_button: Nothing is running in this thread, so there was "
                        "nothing to stop.")
FILES_NOT_PASSED_TEXT = (":paperclip: Your message answered the agent's question, so its "
                         "files were not passed on. Send them again in a new message.")


def new_ref() -> str:
    """A short reference a user can quote, which the logs of the turn carry too."""
    return secrets.token_hex(4)


def truncated_text(original_chars: int, passed_chars: int) -> str:
    """The notice of a message cut to MAX_INPUT_CHARS."""
    return (f":scissors: Your message was {original_chars:,} characters long; "
            f"I passed on the first {passed_chars:,} characters to the agent.")


def notes_text(notes: Sequence[str]) -> str:
    """Notes on files (skipped, not uploaded) as one short message; empty when none."""
    if not notes:
        return ""
    if len(notes) == 1:
        return f":paperclip: {notes[0]}."
    return ":paperclip: " + "\n".join(f"• {note}" for note in notes)


def upload_refused_text(files: Sequence[Attachment]) -> str:
    """The notice of a part's files the thread refused to take for good."""
    names = ", ".join(code_name(f.filename) for f in files)
    return f":paperclip: I couldn't attach {names}: Slack refused the upload."


def ask_text(request: HumanRequest) -> str:
    """What the thread is asked when the agent pauses for a human."""
    if request.name == CONFIRMATION:
        what = plain_text(request.prompt) or (f"May it run {code_name(request.tool)}?"
                                              if request.tool else "May it go on?")
        return (f":raised_hand: The agent needs your approval before it goes on: {what}\n"
                "Reply `yes` in this thread to approve; any other reply declines.")
    if request.name == INPUT:
        what = plain_text(request.prompt) or "It is waiting for your input."
        return f":raised_hand: The agent needs more from you: {what}\nReply in this thread."
    return (":lock: The agent asked for a sign-in to another service, which I can't do from "
            "Slack, so it could not finish this request.")


def crash_text(attempts: int, ref: str) -> str:
    """The notice of a turn given up because trying to answer it kept stopping the bot."""
    return (f":warning: I couldn't answer this message: trying to answer it stopped the bot "
            f"{attempts} times, so I gave up on it. Please try again with a different "
            f"message, or ask an admin to look into it. (ref `{ref}`)")


def error_text(exc: BaseException, ref: str, app_name: str) -> str:
    """The short message a user sees when a turn fails."""
    if isinstance(exc, AdkRefused):
        return (
            ":no_entry: The agent service refused my requests (its host or origin check), so "
            "I can't answer. An admin needs to check how ADK is started and reached (its "
            f"`--host` and `--allow_origins`). (ref `{ref}`)"
        )
    if isinstance(exc, AdkConfigError):
        return (
            f":no_entry: I'm misconfigured: the agent app `{app_name}` is not available on "
            f"the ADK server, so I can't answer. An admin needs to check ADK_APP_NAME. "
            f"(ref `{ref}`)"
        )
    if isinstance(exc, AdkAuthError):
        return (
            ":no_entry: I couldn't sign in to the agent service, so this message wasn't "
            "answered. If it keeps happening, an admin needs to check the bot's ADK "
            f"credentials (ADK_AUTH). (ref `{ref}`)"
        )
    if isinstance(exc, AdkUnavailable):
        return (
            ":warning: I couldn't reach the agent service, so this message wasn't answered. "
            f"Please try again in a moment. (ref `{ref}`)"
        )
    if isinstance(exc, AdkTimeout):
        return (
            ":hourglass: The agent took too long and this turn was abandoned. "
            f"Please try again, perhaps with a narrower question. (ref `{ref}`)"
        )
    return (
        ":warning: The agent ran into an error while answering this message. "
        f"Please try again. (ref `{ref}`)"
    )


def stopped_replies(partial_answer: str, render: Render) -> list[Reply]:
    """A run stopped on request: what the agent had written (the user watched it
    stream), then that it stopped."""
    kept = render(partial_answer) if partial_answer else []
    return [*kept, Reply(STOPPED_TEXT)]


def run_replies(result: TurnResult, ref: str, render: Render) -> tuple[list[Reply], str]:
    """A finished run's replies (the answer, the warnings, the agent's questions to a
    human) and the turn's outcome: answered, asked, agent_error or empty."""
    answer = result.answer
    replies = render(answer) if answer else []
    # The run paused for a human: the thread's next message is the reply. The question is
    # asked whatever else went wrong, since that next message will answer it.
    asks = [Reply(ask_text(r)) for r in result.requests]
    if result.stream_error:
        # What the agent had answered before it failed (a later sub-agent or callback
        # raised) is kept: the user watched it stream, and it may be all they need.
        replies.append(Reply(
            ":warning: The agent ran into an error while answering this message"
            f"{', so this answer may be incomplete' if answer else ''}. "
            f"Please try again. (ref `{ref}`)"
        ))
        return replies + asks, "agent_error"
    if result.error_code:
        said = plain_text(describe_error_code(result.error_code, result.error_message))
        replies.append(Reply(
            f":warning: {said[:1].upper()}{said[1:]}"
            f"{'' if answer or asks else ', so there is no answer'}. (ref `{ref}`)"
        ))
        return replies + asks, "answered" if answer or asks else "agent_error"
    if asks:
        return replies + asks, "asked"
    if not answer:
        return [Reply(f"The agent finished without writing an answer. (ref `{ref}`)")], "empty"
    return replies, "answered"

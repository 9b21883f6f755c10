"""Unit tests for bot.message_text: Slack message text read as plain text for the agent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.message_text import mentioned_user_ids, readable_input
from tests.unit.rendering_checks import PROPERTY_SETTINGS

NAMES = {"U1": "Alice", "UBOT": "Bot"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<@UBOT> what is up?", "what is up?"),
        ("<@UBOT>: what is up?", "what is up?"),
        ("  <@UBOT> , hi", "hi"),
        ("hey <@UBOT> can you help", "hey can you help"),
        ("thanks <@UBOT>!", "thanks!"),
        ("ask <@U1>", "ask @Alice"),
        ("ask <@U9>", "ask @U9"),
        ("ask <@U9|bob>", "ask @bob"),
        ("in <#C123|general>", "in #general"),
        ("in <#C123>", "in #C123"),
        ("see <https://x.com/a|the doc>", "see the doc (https://x.com/a)"),
        ("see <https://x.com/a>", "see https://x.com/a"),
        ("see <http://x.com|x.com>", "see x.com"),
        ("mail <mailto:a@b.c|a@b.c>", "mail a@b.c"),
        ("<!here> deploy", "@here deploy"),
        ("<!channel> deploy", "@channel deploy"),
        ("<!everyone> deploy", "@everyone deploy"),
        ("ping <!subteam^S1|@team>", "ping @team"),
        ("ping <!subteam^S1>", "ping @S1"),
        ("on <!date^1392734382^{date_pretty}|Feb 18, 2014>", "on Feb 18, 2014"),
        ("a &lt;b&gt; &amp;amp; c", "a <b> &amp; c"),
        ("<https://x.com/?a=1&amp;b=2|q &amp; a>", "q & a (https://x.com/?a=1&b=2)"),
        ("  spaced out \n", "spaced out"),
        ("", ""),
    ],
)
def test_readable_input(raw: str, expected: str) -> None:
    assert readable_input(raw, bot_user_id="UBOT", user_names=NAMES) == expected


def test_readable_input_without_bot_id_keeps_all_mentions() -> None:
    assert readable_input("<@UBOT> hi", bot_user_id=None, user_names=NAMES) == "@Bot hi"


def test_mentioned_user_ids() -> None:
    text = "<@U1> and <@W2|bob> and <@U1> again, <#C1> <!here> <@U3>"
    assert mentioned_user_ids(text) == ["U1", "W2", "U3"]
    assert mentioned_user_ids("") == []
    assert mentioned_user_ids("no mentions &lt;@U1&gt;") == []


@PROPERTY_SETTINGS
@given(text=st.text(max_size=200), bot=st.one_of(st.none(), st.just("UBOT")))
def test_readable_input_never_raises(text: str, bot: str | None) -> None:
    result = readable_input(text, bot_user_id=bot, user_names=NAMES)
    assert result == result.strip()
    assert isinstance(mentioned_user_ids(text), list)

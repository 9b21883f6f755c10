"""What a user is told when a turn fails part-way, against a real `adk api_server` (test
agent), the real intake, conversation and worker, on fakeredis, with the console's terminal
in Slack's place."""

from __future__ import annotations

from bot.adk.auth import GoogleIdTokenAuth
from bot.adk.client import AdkClient
from bot.console import BOT_USER, TEAM, console_event, wait_answered
from tests.unit.test_prepared_sessions import build


async def ask(adk: AdkClient, text: str, ts: str) -> str:
    parts, out = build(adk)
    key = f"{TEAM}:CCONSOLE:{ts}"
    try:
        await parts.worker.start()
        mention = console_event(f"<@{BOT_USER}> {text}", ts, ts, mention=True)
        assert await parts.intake.handle(mention, {}) == "queued"
        assert await wait_answered(parts.store, key, ts, 20)
        return out.getvalue()
    finally:
        await parts.worker.stop(1)
        await adk.aclose()


async def test_an_answer_followed_by_an_agent_error_is_kept_with_a_warning(adk_server) -> None:
    said = await ask(AdkClient(adk_server.base_url, "test_agent"), "costs? failafter",
                     "1700000700.000100")
    assert "said=alice: costs? failafter" in said  # the answer the agent gave
    assert "ran into an error" in said and "may be incomplete" in said


async def test_a_credential_that_cannot_be_had_is_reported_in_the_thread(adk_server) -> None:
    def no_credentials(audience: str) -> tuple[str, float | None]:
        raise OSError("no metadata server")

    adk = AdkClient(adk_server.base_url, "test_agent",
                    auth=GoogleIdTokenAuth(adk_server.base_url, fetch=no_credentials))
    said = await ask(adk, "hello", "1700000800.000100")
    assert "couldn't sign in to the agent service" in said and "ref `" in said

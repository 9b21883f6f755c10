"""Self-tests for the ADK test agent (tests/adk_agents/test_agent) on a real
`adk api_server` (tests/fakes/adk_server.py). The other test doubles' self-tests are in
tests/unit/test_fakes.py."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fakes.adk_server import AdkServer


def _run_body(session: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "appName": "test_agent",
        "userId": "u1",
        "sessionId": session,
        "newMessage": {"role": "user", "parts": [{"text": text}]},
        **extra,
    }


def _final_text(events: list[dict[str, Any]]) -> str:
    finals = [e for e in events if not e.get("partial") and e.get("content")]
    parts = finals[-1]["content"]["parts"]
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


async def test_adk_run_keeps_history(adk_server: AdkServer) -> None:
    async with httpx.AsyncClient(base_url=adk_server.base_url, trust_env=False, timeout=30) as http:
        r = await http.post("/apps/test_agent/users/u1/sessions", json={"sessionId": "s1"})
        assert r.status_code == 200, r.text
        r = await http.post("/run", json=_run_body("s1", "first question"))
        assert r.status_code == 200, r.text
        assert "turn=1" in _final_text(r.json())
        r = await http.post(
            "/run",
            json=_run_body("s1", "second tool thought", stateDelta={"slack_user_name": "alice"}),
        )
        events = r.json()
        text = _final_text(events)
        assert "turn=2" in text and "history[1]: first question" in text
        assert "said=second tool thought" in text and "state_user=alice" in text
        assert "SECRET-THOUGHT" not in text
        assert "functionCall" in events[0]["content"]["parts"][0]


async def test_adk_run_sse_streams(adk_server: AdkServer) -> None:
    async with httpx.AsyncClient(base_url=adk_server.base_url, trust_env=False, timeout=30) as http:
        r = await http.post("/apps/test_agent/users/u1/sessions", json={"sessionId": "s2"})
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = []
        body = _run_body("s2", "please stream", streaming=True)
        async with http.stream("POST", "/run_sse", json=body) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: ") :]))
    partials = [e for e in events if e.get("partial")]
    assert len(partials) >= 3
    assert not events[-1].get("partial")
    deltas = "".join(p["content"]["parts"][0]["text"] for p in partials)
    assert deltas == _final_text(events)
    assert "turn=1" in deltas

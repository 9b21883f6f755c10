"""The bundled demo agent, served by ``adk api_server examples/agents`` as
``finops_cost_data_analyst``.

Two modes, chosen at import time (no network needed for either):

* **offline** (default): :class:`FinOpsCostAnalystAgent`, a deterministic ``BaseAgent`` that
  parses the question with a keyword parser and answers from ``data/cloud_costs.csv``. Each
  turn yields a ``query_cost_data`` function call, its function response, then the markdown
  answer, so a bridge can show tool progress exactly as with an LLM agent.
* **llm**: an ``LlmAgent`` (model ``$DEMO_AGENT_MODEL``, default ``gemini-2.5-flash``) with
  the same queries as tools. Used when ``GOOGLE_API_KEY`` is set, unless
  ``DEMO_AGENT_MODE=offline``; ``DEMO_AGENT_MODE=llm`` forces it (e.g. for Vertex AI auth).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncGenerator, Iterable

from google.adk.agents import BaseAgent, LlmAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event
from google.genai import types
from typing_extensions import override

from .analysis import (
    answer_conversation,
    interpret_conversation,
    load_cost_data,
    run_query,
    strip_speaker,
)
from .tools import LLM_TOOLS

logger = logging.getLogger(__name__)

AGENT_NAME = "finops_cost_data_analyst"
TOOL_NAME = "query_cost_data"
DEFAULT_MODEL = "gemini-2.5-flash"
DESCRIPTION = (
    "FinOps cost data analyst: answers questions about cloud spend (GCP and AWS) by service, "
    "team, project, provider and environment, trends and anomalies."
)

INSTRUCTION = """\
You are a FinOps cost data analyst for a company that runs on GCP and AWS. You answer
questions about its cloud bill using only the tools; never invent numbers.

- Call describe_cost_data first if you are unsure which months, services, teams or projects
  exist. "Last month" means the latest month in the data.
- Use get_total_spend, get_spend_breakdown, get_monthly_trend and find_cost_anomalies with
  the narrowest filters that answer the question; query_cost_data accepts a plain-English
  question as a fallback.
- For follow-up questions ("and the month before?", "break that down by team") reuse the
  subject and filters of the previous question.
- Messages may start with the speaker's name ("Alice: ..."); that is who is asking, not a filter.
- Answer in GitHub Markdown: a bold lead sentence with the key number, the relevant table from
  the tool's "markdown" field (keep it as a table), and a one-line takeaway. Be brief.
- If a tool returns an error, fix the arguments (see its hints) or ask a short clarifying
  question.
"""


def _text_of(content: types.Content | None) -> str:
    if content is None or not content.parts:
        return ""
    return "\n".join(p.text for p in content.parts if p.text and not p.thought).strip()


def _earlier_user_messages(ctx: InvocationContext) -> list[str]:
    """User messages of this session before the current invocation, oldest first."""
    messages: list[str] = []
    for event in ctx.session.events:
        if event.author != "user" or event.invocation_id == ctx.invocation_id:
            continue
        text = _text_of(event.content)
        if text:
            messages.append(text)
    return messages


class FinOpsCostAnalystAgent(BaseAgent):
    """Deterministic, LLM-free FinOps analyst over the bundled CSV."""

    @override
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        question = _text_of(ctx.user_content)
        history = _earlier_user_messages(ctx)
        data = load_cost_data()
        query = interpret_conversation(history, question, data)
        result = run_query(query, data)

        if query.intent not in {"help", "thanks"}:
            call_id = f"adk-{uuid.uuid4()}"
            args = {"question": strip_speaker(question), **query.to_args()}
            yield self._event(
                ctx,
                types.Content(
                    role="model",
                    parts=[
                        types.Part(
                            function_call=types.FunctionCall(id=call_id, name=TOOL_NAME, args=args)
                        )
                    ],
                ),
            )
            yield self._event(
                ctx,
                types.Content(
                    role="user",
                    parts=[
                        types.Part(
                            function_response=types.FunctionResponse(
                                id=call_id, name=TOOL_NAME, response=result.summary
                            )
                        )
                    ],
                ),
            )
        yield self._event(
            ctx, types.Content(role="model", parts=[types.Part(text=result.markdown)])
        )

    def _event(self, ctx: InvocationContext, content: types.Content) -> Event:
        return Event(
            invocation_id=ctx.invocation_id,
            author=self.name,
            branch=ctx.branch,
            content=content,
        )


def create_offline_agent() -> FinOpsCostAnalystAgent:
    return FinOpsCostAnalystAgent(name=AGENT_NAME, description=DESCRIPTION)


def create_llm_agent(model: str | None = None) -> LlmAgent:
    return LlmAgent(
        name=AGENT_NAME,
        model=model or os.environ.get("DEMO_AGENT_MODEL") or DEFAULT_MODEL,
        description=DESCRIPTION,
        instruction=INSTRUCTION,
        tools=list(LLM_TOOLS),
    )


def select_mode(environ: Iterable[tuple[str, str]] | None = None) -> str:
    """``"llm"`` or ``"offline"``, from ``DEMO_AGENT_MODE`` and ``GOOGLE_API_KEY``."""
    env = dict(environ) if environ is not None else dict(os.environ)
    mode = env.get("DEMO_AGENT_MODE", "").strip().lower()
    if mode in {"offline", "llm"}:
        return mode
    return "llm" if env.get("GOOGLE_API_KEY", "").strip() else "offline"


def build_root_agent() -> BaseAgent:
    mode = select_mode()
    logger.info("finops_cost_data_analyst demo agent: %s mode", mode)
    return create_llm_agent() if mode == "llm" else create_offline_agent()


root_agent = build_root_agent()

__all__ = [
    "AGENT_NAME",
    "FinOpsCostAnalystAgent",
    "answer_conversation",
    "build_root_agent",
    "create_llm_agent",
    "create_offline_agent",
    "root_agent",
    "select_mode",
]

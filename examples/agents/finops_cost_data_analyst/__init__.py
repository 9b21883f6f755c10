"""FinOps cost data analyst demo agent (served by ``adk api_server examples/agents``)."""

from . import agent

__all__ = ["agent"]

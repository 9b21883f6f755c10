"""Slack feedback as ADK eval sets: the rated answers' conversations, with the speakers'
names replaced, built with ADK's own evaluation models (`python -m bot evals export`)."""

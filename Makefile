# adk-slack-bot: everything a fresh machine needs is set up by these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ADK_PORT ?= 8000

.PHONY: venv test test-unit test-integration lint demo run adk bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make test: lint, then every test (unit + integration against the real Redis and ADK)
test: lint
	$(BIN)/pytest -ra

test-unit: venv
	$(BIN)/pytest -ra tests/unit

test-integration: venv
	$(BIN)/pytest -ra tests/integration

## make lint: ruff, and the type checker (mypy, strict on bot/)
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

## make demo: the bundled FinOps demo agent on a local adk api_server, and the console
demo: venv
	$(BIN)/python scripts/demo.py

## make adk: serve the bundled demo agent on ADK_PORT (for `make run` against it)
adk: venv
	$(BIN)/adk api_server --host 127.0.0.1 --port $(ADK_PORT) \
		--session_service_uri memory:// examples/agents

## make run: the bot, with the settings in .env (Socket Mode if SLACK_APP_TOKEN is set)
run: venv
	$(BIN)/python -m bot serve

## make bench: every performance figure against the floor, one table (docs/benchmarks.md);
## needs the Redis at 127.0.0.1:6379 (BENCH_REDIS_URL); BENCH_ARGS=--quick for a smoke run
bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

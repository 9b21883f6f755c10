# adk-slack-bot: everything a fresh machine needs is set up by these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ADK_PORT ?= 8000
# Test processes (pytest-xdist). Each test module runs whole on one process
# (--dist loadfile), so a module's adk api_server is started once.
TEST_WORKERS ?= 3
PYTEST := $(BIN)/pytest -ra -n $(TEST_WORKERS) --dist loadfile

.PHONY: venv test test-unit test-integration lint docs demo run adk bench lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make test: lint, then every test (unit + integration against the real Redis and ADK), on
## TEST_WORKERS processes
test: lint
	$(PYTEST)

## make test-unit: tests/unit only, which needs neither Redis nor ADK (fakeredis, fakes)
test-unit: venv
	$(PYTEST) tests/unit

## make test-integration: tests/integration only, against the real Redis (TEST_REDIS_URL)
## and real adk api_servers it starts
test-integration: venv
	$(PYTEST) tests/integration

## make lint: ruff, and the type checker (mypy, strict on bot/)
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

## make docs: write docs/configuration.md and .env.example from the Settings fields in
## bot/config.py (python -m bot.settings_docs; tests/unit/test_settings_docs.py checks them)
docs: venv
	$(BIN)/python -m bot.settings_docs

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

## make lock: requirements/*.lock, the hashed pins the Docker images install from, resolved
## from pyproject.toml for the images' Python (3.11, Linux x86_64) by a pinned uv. Pins that
## still satisfy pyproject.toml are kept; LOCK_ARGS=--upgrade moves every pin to the newest
## release (LOCK_ARGS="--upgrade-package aiohttp" only that one).
LOCK_UV_VERSION := 0.13.9
LOCK_TOOL := build/lock-tool
LOCK_COMPILE := $(LOCK_TOOL)/bin/uv pip compile --quiet --generate-hashes \
	--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock" $(LOCK_ARGS)

lock:
	test -x $(LOCK_TOOL)/bin/pip || $(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/pip install --quiet uv==$(LOCK_UV_VERSION)
	$(LOCK_COMPILE) pyproject.toml -o requirements/bot.lock
	$(LOCK_COMPILE) pyproject.toml --extra adk -o requirements/adk.lock
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' \
		| $(LOCK_COMPILE) - -o requirements/build.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

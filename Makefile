# registry-bot: `make test` and `make demo` set everything up on a machine with Python 3.11+.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes: most of the suite waits on real servers, so more processes than cores pay;
# a module's tests stay together in one (its fixtures start real processes once), and the
# modules are handed out in the order tests/conftest.py collects them, the longest first
# (pytest-xdist would otherwise hand out the modules with the most tests first).
TEST_WORKERS ?= 4

# The first Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: install test demo demo-event bench soak lint clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "registry-bot needs Python 3.11 or newer on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Finds Redis at REDIS_URL or 127.0.0.1:6379, or starts a private one (devkit/stack.py);
# the browser test drives the system's Chromium, installed here if missing and root.
test: install
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10 $(PYTEST_ARGS)

# The whole loop on this machine with the browser sandbox; Ctrl-C stops it (devkit/demo.py).
demo: install
	$(BIN)/python -m devkit.demo

# One more training run for a running demo.
demo-event: install
	$(BIN)/python -m devkit.demo event

# Starts its own stack (MLflow server, Celery worker, gunicorn services, Slack double) and
# writes bench/results/<date>.{json,md}, a latency plot and the sweep's plot (<date>-sweep.png;
# alone: `python -m bench sweep`); `$(BIN)/python -m bench --quick` checks it.
# Then the scale-out curve on PostgreSQL (devkit/prodstack.py): bench/results/<date>-scaleout.*
bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench scaleout

# The chaos soak (bench/soak/): its own stack (Redis with an append-only file, MLflow server,
# worker, beat, webhooks, bot, Slack double) under 300 events and 150 clicks, 10 whole-worker
# kills, a Redis and an MLflow restart and Slack 429/500s; checks the invariants, prints the
# figures, exits 1 on any finding. `make test` runs its short variant (tests/test_soak.py).
soak: install
	$(BIN)/python -m bench.soak

LINT_PATHS := registry webhooks worker bot devkit bench tests

lint: install
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache

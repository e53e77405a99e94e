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

# Every install takes its versions from here (make lock writes it), so a fresh clone gets the
# releases the suite last passed with rather than whatever is newest that day.
LOCK := constraints.txt
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest release pyproject.toml allows;
# `LOCK_ARGS="--upgrade-package mlflow"` moves one. Plain `make lock` keeps the pins it can.
LOCK_ARGS ?=

.PHONY: install lock test demo demo-event bench soak outage lint clean

$(STAMP): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "registry-bot needs Python 3.11 or newer on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[serving,test]'
	@touch $(STAMP)

install: $(STAMP)

# `make demo` installs only what the demo needs (pyproject.toml's `demo` extra, pinned by
# the same $(LOCK)), saying what it does; a full install (make install) has it already.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "registry-bot needs Python 3.11 or newer on PATH"; exit 1; }
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ] && [ $(STAMP) -nt $(LOCK) ]; then \
		echo "registry-bot demo: $(VENV) has the full install, which the demo needs"; \
	else \
		echo "registry-bot demo: installing what the demo needs into $(VENV) (MLflow, scikit-learn and their dependencies: about 110 packages, 900 MB; nothing outside $(VENV) but pip's cache)"; \
		test -x $(BIN)/python || { echo "  creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }; \
		$(BIN)/python -m pip install --quiet --upgrade pip; \
		set -o pipefail; $(BIN)/python -m pip install --progress-bar off -c $(LOCK) -e '.[demo]' 2>&1 \
			| $(BIN)/python scripts/pip-progress.py; \
	fi
	@touch $(DEMO_STAMP)

# Resolves pyproject.toml's dependencies and its serving, test, dev and demo extras once for
# every supported Python (3.11+) and platform (--universal), the project itself left out,
# into $(LOCK).
# The pins already there are the resolver's preferences, so only what must change does.
lock:
	@test -n "$(PYTHON)" || { echo "registry-bot needs Python 3.11 or newer on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.13,<0.14'
	@if [ -f $(LOCK) ]; then cp $(LOCK) $(VENV)/lock.txt; else rm -f $(VENV)/lock.txt; fi
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
		--extra serving --extra test --extra dev --extra demo \
		--no-header $(LOCK_ARGS) -o $(VENV)/lock.txt pyproject.toml
	{ printf '%s\n' \
		'# The versions every install of registry-bot takes: make install (and so make test, demo,' \
		'# lint and CI) and both Dockerfiles install with `-c constraints.txt`. Made by `make lock`:' \
		'#   uv pip compile --universal --python-version 3.11 --extra serving --extra test \' \
		'#     --extra dev --extra demo pyproject.toml' \
		'# one resolution for Python 3.11+ on every platform, registry-bot itself left out.' \
		'# Do not edit it by hand: change pyproject.toml and run `make lock` (it keeps the pins it' \
		'# can); `make lock LOCK_ARGS=--upgrade` takes the newest releases pyproject.toml allows.'; \
		cat $(VENV)/lock.txt; } > $(LOCK)

# Finds Redis at REDIS_URL or 127.0.0.1:6379, or starts a private one (devkit/stack.py);
# the browser test drives the system's Chromium, installed here if missing and root.
test: install
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10 $(PYTEST_ARGS)

# The whole loop on this machine with the browser sandbox; Ctrl-C stops it (devkit/demo.py).
demo: $(DEMO_STAMP)
	$(BIN)/python -m devkit.demo

# One more training run for a running demo.
demo-event: $(DEMO_STAMP)
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

# tests/test_outage.py with MLflow down for 5 minutes instead of the suite's 150 s.
outage: install
	REGISTRY_BOT_OUTAGE_SECONDS=300 $(BIN)/python -m pytest -n 2 -s tests/test_outage.py

LINT_PATHS := registry webhooks worker bot gate devkit bench tests

lint: install
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[test,dev]"
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache

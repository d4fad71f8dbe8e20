# llmops: `make demo` runs the pipeline on embedded defaults; `make test` runs the tests.
# uv comes from PyPI if missing; the environment is built from uv.lock (.venv/).
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --locked --quiet
PYTEST_ARGS ?=

.PHONY: help setup demo serve stop test test-unit test-integration check format bench clean browser report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup:  ## create .venv from the lock file
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: setup  ## run the main job on embedded defaults (SQLite, DuckDB, local Prefect, simulator)
	@$(RUN) llmops demo

serve: setup  ## start Prefect server + UI (127.0.0.1:4200), a worker, the simulator, the gateway
	@$(RUN) llmops stack up

stop:  ## stop what `make serve` started
	@$(RUN) llmops stack down

test: setup  ## run every test (the Postgres ones need LLMOPS_TEST_DATABASE_URL)
	@$(RUN) pytest $(PYTEST_ARGS)

test-unit: setup  ## fast tests only
	@$(RUN) pytest tests/unit $(PYTEST_ARGS)

test-integration: setup  ## real databases, HTTP servers, Prefect
	@$(RUN) pytest tests/integration $(PYTEST_ARGS)

check: setup  ## ruff (lint, format) and mypy
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) mypy

format: setup  ## apply ruff's fixes and formatting
	@$(RUN) ruff check --fix .
	@$(RUN) ruff format .

bench: setup  ## run the benchmarks in bench/ (each prints a ratio table)
	@for b in bench/*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

browser:  ## install Debian's chromium for the dashboard browser test (as root; no Playwright download)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@chromium --version

report: setup  ## build the cost dashboard from the DuckDB warehouse (.llmops/reports/index.html)
	@$(RUN) llmops report build

clean:  ## remove local state (.llmops/: ops DB, warehouse, Prefect home)
	rm -rf .llmops .pytest_cache .mypy_cache .ruff_cache

# The few verbs a newcomer needs. `make run` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run run-distributed stop test lint bench docs screenshot clean constraints

setup: $(VENV)/.installed node_modules/.installed
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-redis.sh

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	bash scripts/run-stack.sh

run-distributed: setup
	bash scripts/run-stack.sh --distributed

stop:
	bash scripts/stop-stack.sh

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check kpi fake_source dags tests bench docs

# docs/configuration.md's settings table, regenerated from kpi/settings.py (tests/unit/test_docs.py
# fails while it is stale).
docs: setup
	$(BIN)/cog -r docs/configuration.md

# docs/screenshot.png, from the demo's 30 days backfilled without Airflow (about a minute).
screenshot: setup
	$(BIN)/python docs/screenshot.py

bench: setup
	$(BIN)/python bench/compute.py
	$(BIN)/python bench/extract_store.py
	$(BIN)/python bench/site.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/nightly.py
	$(BIN)/python bench/couch_clients.py

# Re-pin every transitive dependency (after changing requirements.txt): a fresh venv resolves
# requirements.txt alone, and its versions become the constraints. Then run `make test`.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet -r requirements.txt
	{ sed -n '1,3p' constraints.txt; .venv-constraints/bin/pip freeze; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-constraints

clean:
	rm -rf .devdata .airflow .pytest_cache site_output/site site_output/.site.* .site_output.builds .site_output.cache*

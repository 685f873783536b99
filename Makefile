# shoplake — the two commands in the README are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# First interpreter on PATH in the supported range (bytewax 0.21.1 has wheels up to 3.12).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null && echo $$p && break; done)

.PHONY: help setup system-deps demo test lint format schemas clean

help:
	@echo "make demo   - install, start Kafka, the collector and the speed layer, simulate a week of traffic, backfill the lake, serve the UIs"
	@echo "make test   - install, provision Kafka and Postgres, run the test suite"
	@echo "make lint   - import layers (lint-imports), ruff check + format check, sqlfluff on the dbt models"

system-deps:
	@bash infra/system-deps.sh

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: shoplake needs Python 3.11 or 3.12 on PATH (bytewax 0.21.1 has no wheels for 3.13)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

setup: system-deps $(STAMP)

demo: setup
	$(BIN)/shoplake demo

test: setup
	@bash infra/system-deps.sh --test
	$(BIN)/shoplake kafka install
	$(BIN)/shoplake postgres install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd dbt_project && ../$(BIN)/sqlfluff lint models macros

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(STAMP)
	$(BIN)/shoplake contracts export

clean:
	-$(BIN)/shoplake kafka stop
	-$(BIN)/shoplake postgres stop
	rm -rf .shoplake

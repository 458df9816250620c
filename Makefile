# tasksvc: `make run` (the whole service on this machine) and `make test` (lint, types, suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types fmt bench clean services

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tasksvc dev

lint: $(STAMP)
	$(BIN)/ruff check tasksvc tests bench
	$(BIN)/ruff format --check tasksvc tests bench

types: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) services lint types
	$(BIN)/pytest

# PostgreSQL, Redis and promtool for the suite: started/installed only where missing.
services:
	@bash scripts/test-services.sh

fmt: $(STAMP)
	$(BIN)/ruff format tasksvc tests bench
	$(BIN)/ruff check --fix tasksvc tests bench

bench: $(STAMP)
	@bash scripts/test-services.sh --bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

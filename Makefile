# Two entry points for a fresh machine: `make run` (set up, then open the app) and
# `make test` (set up, then run every check and test). Both are idempotent: set-up reruns only
# when pyproject.toml changes. The first set-up compiles llama.cpp (about 7 minutes on 2 cores).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pins for this project's machines (the CPU build of torch lies on disk for 2.13.0).
CONSTRAINTS := packaging/constraints.txt

.PHONY: run test setup setup-dev lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-app: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[desktop]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(CONSTRAINTS) $(VENV)/.stamp-app
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[desktop,dev]"
	touch $@

setup: $(VENV)/.stamp-app
	$(BIN)/hearth setup

setup-dev: $(VENV)/.stamp-dev

run: setup
	$(BIN)/hearth

lint: setup-dev
	$(BIN)/ruff check core desktop tests bench
	$(BIN)/lint-imports

typecheck: setup-dev
	$(BIN)/mypy

test: lint typecheck
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .hearth-test .pytest_cache .mypy_cache .ruff_cache

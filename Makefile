# Two entry points for a fresh machine: `make run` (set up, then open the app) and
# `make test` (set up, then run every check and test). Both are idempotent: set-up reruns only
# when pyproject.toml changes. The first set-up compiles llama.cpp (about 7 minutes on 2 cores).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pins for this project's machines (the CPU build of torch lies on disk for 2.13.0).
CONSTRAINTS := packaging/constraints.txt
LLAMA_CPP_VERSION := 0.3.36

# llama.cpp build flags. On x86-64 Linux: a portable AVX2 build without AMX (llama.cpp's AMX
# kernels crash on machines that report AMX but do not enable it, as some VMs do). Add your own
# with CMAKE_ARGS, e.g. CMAKE_ARGS="-DGGML_CUDA=on" or "-DGGML_METAL=on".
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)
ifeq ($(UNAME_S)-$(UNAME_M),Linux-x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $(CMAKE_ARGS)
else
LLAMA_CMAKE_ARGS := $(CMAKE_ARGS)
endif
# The compiled wheel is kept per set of flags, outside the checkout, so fresh clones reuse it
# and a change of flags never picks up a wheel built with other ones.
WHEEL_CACHE := $(HOME)/.cache/hearth/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

.PHONY: run test setup setup-dev lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(WHEEL_CACHE)/.built: | $(BIN)/python
	@echo "Compiling llama.cpp (llama-cpp-python $(LLAMA_CPP_VERSION)); the first time takes several minutes..."
	mkdir -p $(WHEEL_CACHE)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps \
		-w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(VENV)/.stamp-app: pyproject.toml $(CONSTRAINTS) $(WHEEL_CACHE)/.built | $(BIN)/python
	$(PIP) install -q --find-links $(WHEEL_CACHE) --no-cache-dir "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[desktop,train]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(CONSTRAINTS) $(VENV)/.stamp-app
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[desktop,dev,train]"
	touch $@

setup: $(VENV)/.stamp-app
	$(BIN)/hearth setup

setup-dev: $(VENV)/.stamp-dev

# The preflight says in one line which system packages Qt's X11 plugin lacks (else Qt aborts).
run: setup
	@$(BIN)/python -m desktop.preflight
	$(BIN)/hearth

lint: setup-dev
	$(BIN)/ruff check core desktop tests bench
	$(BIN)/lint-imports

typecheck: setup-dev
	$(BIN)/mypy

# The window's tests run one file per process, apart from the core tests (which train and load models
# in-process): a full run in one process aborted in Qt's teardown once, and each file passes alone.
# A file whose process dies of a signal is shown with its crash and run once more (tests/run_each.py).
test: lint typecheck
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests/core $(PYTEST_ARGS)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m tests.run_each tests/desktop/test_*.py -- $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .hearth-test .pytest_cache .mypy_cache .ruff_cache

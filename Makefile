# Two entry points for a fresh machine: `make run` (set up, then open the app) and
# `make test` (set up, then run every check and test). Both are idempotent: set-up reruns only
# when pyproject.toml changes. The first set-up compiles llama.cpp (about 20 minutes on 2 cores with the Vulkan shaders).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Pins for this project's machines (the CPU build of torch lies on disk for 2.13.0).
CONSTRAINTS := packaging/constraints.txt
LLAMA_CPP_VERSION := 0.3.36

# llama.cpp build flags. Linux and Windows: every CPU variant as a loadable backend
# (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), and ggml picks the best for the running CPU at start-up
# (core.engine.backends), as llama.cpp's own releases do; packaging/llama_backends.cmake installs the
# variants into the wheel. LLAVA_BUILD builds llama.cpp's multimodal library (libmtmd: images in chat). GGML_RPC builds
# the RPC backend (one more loadable library: `hearth rpc-worker`, models split across machines); no RDMA
# transport, so the library needs nothing the target machine may lack. macOS: Metal,
# which llama-cpp-python turns on itself. Add your own with CMAKE_ARGS, e.g. CMAKE_ARGS="-DGGML_CUDA=on".
# Linux: GGML_VULKAN builds the Vulkan backend (AMD, Intel and NVIDIA GPUs) as one more loadable library,
# which ggml loads only where a Vulkan driver answers; packaging/vulkan_deps.sh installs what it needs to
# compile (Debian/Ubuntu; elsewhere it is built when glslc is there). HEARTH_VULKAN=off builds without it.
UNAME_S := $(shell uname -s)
ifeq ($(UNAME_S),Darwin)
LLAMA_FLAGS := -DLLAVA_BUILD=ON -DGGML_RPC=ON -DGGML_RPC_RDMA=OFF $(CMAKE_ARGS)
else
HEARTH_VULKAN ?= $(shell (command -v apt-get || command -v glslc) >/dev/null 2>&1 && echo on || echo off)
VULKAN_FLAGS := $(if $(filter on,$(HEARTH_VULKAN)),-DGGML_VULKAN=ON)
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DLLAVA_BUILD=ON -DGGML_RPC=ON -DGGML_RPC_RDMA=OFF $(VULKAN_FLAGS) $(CMAKE_ARGS)
endif
LLAMA_CMAKE_ARGS := $(LLAMA_FLAGS) -DCMAKE_PROJECT_INCLUDE=$(CURDIR)/packaging/llama_backends.cmake
# The compiled wheel is kept per set of flags (and version of the install hook), outside the
# checkout, so fresh clones reuse it and a change of flags never picks up a wheel built with other ones.
WHEEL_KEY := $(shell (echo '$(LLAMA_FLAGS)'; cat packaging/llama_backends.cmake) | cksum | cut -d' ' -f1)
WHEEL_CACHE := $(HOME)/.cache/hearth/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(WHEEL_KEY)

.PHONY: run test setup setup-dev lint typecheck clean package package-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(WHEEL_CACHE)/.built: | $(BIN)/python
	@echo "Compiling llama.cpp (llama-cpp-python $(LLAMA_CPP_VERSION)); the first time takes several minutes..."
	mkdir -p $(WHEEL_CACHE)
	vulkan=""; if [ -n "$(VULKAN_FLAGS)" ]; then vulkan="$$(bash packaging/vulkan_deps.sh)" || exit 1; fi; \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$vulkan" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) $(PIP) wheel -q --no-cache-dir --no-deps \
		-w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(VENV)/.stamp-app: pyproject.toml $(CONSTRAINTS) $(WHEEL_CACHE)/.built | $(BIN)/python
	$(PIP) install -q --find-links $(WHEEL_CACHE) --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$(LLAMA_CPP_VERSION)"
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
	$(BIN)/ruff check core desktop tests bench packaging
	$(BIN)/lint-imports

typecheck: setup-dev
	$(BIN)/mypy

# The window's tests run one file per process, apart from the core tests (which train and load models
# in-process): a full run in one process aborted in Qt's teardown once, and each file passes alone.
# A file whose process dies of a signal is shown with its crash and run once more (tests/run_each.py).
test: lint typecheck
	$(if $(VULKAN_FLAGS),bash packaging/vulkan_deps.sh --runtime >/dev/null)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests/core $(PYTEST_ARGS)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m tests.run_each tests/desktop/test_*.py -- $(PYTEST_ARGS)

# The installers (packaging/): the PyInstaller folder, then a .deb and a .tar.gz in dist/ (Linux).
# The release workflow (.github/workflows/release.yml) runs the same targets on each OS.
$(VENV)/.stamp-package: pyproject.toml $(CONSTRAINTS) $(VENV)/.stamp-app
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[desktop,train,package]"
	touch $@

package: $(VENV)/.stamp-package
	bash packaging/system_deps.sh
	$(BIN)/python packaging/build_linux.py

# The installers' smoke test: the .deb in a bare Debian root (debootstrap) under Xvfb, makensis on the
# Windows script, the training pack installed (and killed midway) by the installed app.
package-test: $(VENV)/.stamp-package
	PYTHON=$(BIN)/python bash packaging/package_test.sh

clean:
	rm -rf $(VENV) .hearth-test .pytest_cache .mypy_cache .ruff_cache build dist

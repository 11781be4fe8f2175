# pgn-deploy developer entry points. Everything runs inside .venv in this folder.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install install-gpu venv-serve cpp test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# PyTriton's wheel needs numpy < 2: the live-server test runs it from its own environment.
SERVE_STAMP := .venv-serve/.installed
$(SERVE_STAMP): pyproject.toml
	test -x .venv-serve/bin/python || $(PYTHON) -m venv .venv-serve
	.venv-serve/bin/python -m pip install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

venv-serve: $(SERVE_STAMP)

# onnxruntime-gpu and onnxruntime install the same module: never keep both.
install-gpu: $(STAMP)
	$(BIN)/python -m pip uninstall --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet -e '.[gpu]'

# The C++ library and its Python bindings (pgn_deploy._native): fetches the ONNX Runtime
# headers into cpp_bindings/build/, builds, installs the module into the package.
cpp: $(STAMP)
	PYTHON=$(BIN)/python cpp_bindings/scripts/build.sh

# Builds and tests the C++ library when its inputs can be had (else prints SKIP and why),
# then runs the whole pytest suite (C++ parity tests skip with the reason when unbuilt).
test: $(STAMP) $(SERVE_STAMP)
	PYTHON=$(BIN)/python cpp_bindings/scripts/build.sh --if-available --test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-serve build *.egg-info cpp_bindings/build pgn_deploy/_native*.so

# pgn-deploy developer entry points. Everything runs inside .venv in this folder.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install install-gpu venv-serve test demo bench clean

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

test: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-serve build *.egg-info

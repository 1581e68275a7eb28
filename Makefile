# Set-up contract: `make install` (idempotent), `make repro`, `make test`. Nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# DVC runs each stage's `python -m pipeline ...` through the shell: put the venv first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test clean-venv

install: $(STAMP)

# Re-runs only when the lock or the project metadata changes. torch==2.13.0 is pinned in the lock, so pip never
# resolves an unpinned torch (which would pull a multi-GB CUDA build).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)

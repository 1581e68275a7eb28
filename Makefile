# Set-up contract: `make install` (idempotent), `make repro`, `make test`. Nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# DVC runs each stage's `python -m pipeline ...` through the shell: put the venv first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test bench plots clean-venv

install: $(STAMP)

# Re-runs only when the lock or the project metadata changes. torch==2.13.0 is pinned in the lock, so pip never
# resolves an unpinned torch (which would pull a multi-GB CUDA build).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `check` validates params.yaml first: a bad value is one line, before DVC deletes any stage's old outputs.
repro: install
	$(BIN)/python -m pipeline check
	$(BIN)/dvc repro

# Most tests wait on DVC and git subprocesses, so one pytest worker per core (pytest-xdist) nearly halves the wall
# time. A test file stays on one worker (--dist loadfile): its tests share module fixtures (a reproduced project, a
# sweep), which would otherwise be built once per worker. tests/conftest.py orders the longest files first, and
# --no-loadscope-reorder keeps that order (xdist would otherwise hand out the files with the most tests first).
# One worker per core this process may use (its affinity mask, as the pipeline counts cores; xdist's `auto` counts
# physical cores, which is 1 on many 2-vCPU machines). `make test TEST_WORKERS=1` runs one file at a time.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())')
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Issue 7's benchmark: every target measured side by side in one run; prints a table, writes benchmarks/results.json.
bench: install
	$(BIN)/python -m benchmarks.run

# An offline `dvc plots show`: the default page loads vega from cdn.jsdelivr.net, so its charts are blank without
# internet. tools/plots_template.py inlines vega, vega-lite and vega-embed from vl-convert-python into a template.
# That package (84 MB) is only needed here, so it stays out of requirements.lock to keep the default install small;
# it is pinned here and installed only when the pinned version is missing.
VL_CONVERT_VERSION := 1.9.0.post1
HAS_VL_CONVERT := import importlib.metadata as m, sys; sys.exit(m.version("vl-convert-python") != "$(VL_CONVERT_VERSION)")

plots: install
	$(BIN)/python -c '$(HAS_VL_CONVERT)' 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet --disable-pip-version-check vl-convert-python==$(VL_CONVERT_VERSION)
	$(BIN)/python tools/plots_template.py -o build/plots-template.html
	$(BIN)/dvc plots show --html-template build/plots-template.html -o dvc_plots
	@echo "Offline plots page: $(abspath dvc_plots/index.html)"

clean-venv:
	rm -rf $(VENV)

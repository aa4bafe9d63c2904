# Two commands do all the set-up on a fresh machine:
#   make demo   create/refresh .venv, install, run the main job (synthetic data -> ... on CPU)
#   make test   same install, then the tests and ruff
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location" || true; }
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A local CPU build of torch is installed first when one is available (fast here); elsewhere
# pip picks the platform's default build. The project itself only needs torch>=2.4.
TORCH_SPEC ?= torch==2.13.0
export KEDRO_DISABLE_TELEMETRY := 1
export COLUMNS := 200

.PHONY: install demo test lint viz clean-data

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(BIN)/python -m pip install -q --upgrade pip $(QUIET_PIP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(QUIET_PIP) \
		|| $(BIN)/python -m pip install -q torch $(QUIET_PIP)
	$(BIN)/python -m pip install -q -e ".[dev]" $(QUIET_PIP)
	$(BIN)/python -c "import isles_diffseg, kedro, torch; print('installed: kedro', kedro.__version__, '| torch', torch.__version__)"

demo: install
	$(BIN)/kedro run

test: install
	$(BIN)/python -m pytest
	$(BIN)/ruff check src tests

lint: install
	$(BIN)/ruff check src tests

viz: install
	$(BIN)/kedro viz run

clean-data:
	find data -mindepth 2 ! -name .gitkeep -delete 2>/dev/null; find data -mindepth 2 -type d -empty -delete

# One Makefile that README, developers and CI call unchanged.
# `make demo` runs the main job; `make test` runs the whole suite. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest pytest-server system-deps node-deps bench clean docs

$(PY):
	@bash scripts/make-venv.sh $(PYTHON) $(VENV)

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[emulator]'
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_BASE)

system-deps:
	@bash scripts/install-system-deps.sh

node-deps:
	@bash scripts/install-node-deps.sh

demo: $(STAMP_BASE)
	@bash scripts/install-system-deps.sh --sandbox-only
	$(VENV)/bin/cigate demo

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check cigate tests bench
	$(VENV)/bin/ruff format --check cigate tests bench

typecheck: $(STAMP_DEV)
	$(VENV)/bin/mypy

pytest: $(STAMP_DEV) system-deps node-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The SDK-facing suites again, over a real uvicorn server instead of in-process.
SERVER_SUITES := tests/emulator tests/client/test_run.py tests/client/test_download.py

pytest-server: $(STAMP_DEV) system-deps
	CIGATE_TEST_SERVER=1 $(PY) -m pytest $(SERVER_SUITES)

test: lint typecheck pytest pytest-server

bench: $(STAMP_DEV) system-deps node-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: $(STAMP_DEV)
	$(PY) -m cigate.docgen

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

# One Makefile that README, developers and CI call unchanged.
# `make demo` runs the main job; `make test` runs the whole suite. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV := $(VENV)/.installed-dev
# Exact versions with hashes of everything make installs (`make lock` refreshes them; runtime
# ranges for library users stay in pyproject.toml). demo.txt is dev.txt's subset for the demo.
LOCK_DEV := requirements/dev.txt
LOCK_DEMO := requirements/demo.txt
# The gateway image's lock (deploy/Dockerfile): the gateway with PostgreSQL and Azure storage.
LOCK_GATEWAY := requirements/gateway.txt
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
LOCK_FLAGS := --universal --generate-hashes --python-version 3.11 --quiet

.PHONY: demo test lint typecheck pytest pytest-server system-deps node-deps bench clean docs lock

$(PY):
	@bash scripts/make-venv.sh $(PYTHON) $(VENV)

# The lock first (every package pinned and hash-checked), then the project itself without
# resolving anything (its build backend is in the lock too, hence no build isolation).
$(STAMP_BASE): $(LOCK_DEMO) pyproject.toml | $(PY)
	$(PIP_INSTALL) --require-hashes -r $(LOCK_DEMO)
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $@

$(STAMP_DEV): $(LOCK_DEV) pyproject.toml | $(PY)
	$(PIP_INSTALL) --require-hashes -r $(LOCK_DEV)
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $@ $(STAMP_BASE)

# Re-resolve the locks after a change to pyproject.toml (pins kept where they still fit);
# `make lock UPGRADE=1` moves every package to its newest release within the ranges.
lock: $(STAMP_DEV)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra dev $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) -o $(LOCK_DEV)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra emulator $(LOCK_FLAGS) \
		-c $(LOCK_DEV) -o $(LOCK_DEMO)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra postgres --extra azure \
		$(LOCK_FLAGS) -c $(LOCK_DEV) -o $(LOCK_GATEWAY)

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

# The SDK-facing suites again, over a real uvicorn server instead of in-process. The generated
# hostile-input suites (1,494 cases) run in-process only: they judge the app's own answers, and
# the raw-socket tests (tests/emulator/test_canonical_paths.py) cover what a real server parses.
SERVER_SUITES := tests/emulator tests/client/test_run.py tests/client/test_download.py \
	--ignore=tests/emulator/test_hostile_input.py --ignore=tests/emulator/test_foundry_hostile.py

pytest-server: $(STAMP_DEV) system-deps
	CIGATE_TEST_SERVER=1 $(PY) -m pytest $(SERVER_SUITES)

test: lint typecheck pytest pytest-server

bench: $(STAMP_DEV) system-deps node-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: $(STAMP_DEV)
	$(PY) -m cigate.cli.docgen

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

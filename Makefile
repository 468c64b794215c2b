# `make run` and `make test` work on a fresh machine: they create .venv and install the project first,
# with the exact versions of requirements.lock (`make lock` refreshes it; see the README's Installing).
# The lock is a complete resolution, so it is installed with --no-deps: pip would otherwise re-check the
# pins lock-overrides.txt overrode on purpose and refuse them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
LOCK_ARGS ?=
# What the lock (and so CI) installs beside the service: the test tools and every export converter.
LOCK_EXTRAS := --extra dev --extra exports

.PHONY: install run test lint lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev,exports]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/vision-trainer serve

# Static checks first (ruff lint and format, mypy on src/), then the whole test suite.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench main.py
	$(BIN)/ruff format --check src tests bench main.py
	$(BIN)/mypy src

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-resolve the lock from pyproject.toml, keeping every pin that still fits; LOCK_ARGS=--upgrade
# takes the newest versions of everything, LOCK_ARGS='--upgrade-package fastapi' of one package.
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet uv; }
	$(BIN)/uv pip compile pyproject.toml $(LOCK_EXTRAS) --overrides lock-overrides.txt --python $(BIN)/python -o $(LOCK) $(LOCK_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# fedsite: `make demo` runs a demo federation, `make test` runs the whole test suite.
# Both create the virtualenv they need (.venv) from the exact pins in requirements/.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgres://fedsite:fedsite@127.0.0.1:5432/fedsite
# The dashboard's charting library, from npm (package-lock.json), served by Django: no CDN.
VENDOR := static/vendor/chart.umd.min.js

.PHONY: demo test test-sqlite test-postgres lint run services worker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The checkout itself is installed in editable mode, so `python -m fedsite_node` and `import fedsite_node`
# work from any directory with this venv.
$(VENV)/.base: requirements/base.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: requirements/dev.txt requirements/base.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(VENV)/.base $@

$(VENDOR): package.json package-lock.json scripts/build_static.sh
	scripts/build_static.sh

## demo: a server and 3 nodes on this machine (SQLite, no services); prints the loss per round
demo: $(VENV)/.base $(VENDOR)
	DEBUG=1 $(BIN)/python manage.py demo $(DEMO_ARGS)

## run: the server alone on 0.0.0.0:5000, embedded mode
run: $(VENV)/.base $(VENDOR)
	DEBUG=1 $(BIN)/python manage.py migrate
	DEBUG=1 $(BIN)/python manage.py runserver 0.0.0.0:5000

## services: PostgreSQL and Redis on loopback for the scaled mode (installs them on a fresh Debian box)
services:
	scripts/services.sh all

## test: lint, then the whole suite on SQLite, then the database tests again on PostgreSQL
test: lint test-sqlite test-postgres

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Coverage floors of the whole suite on SQLite: the total, and the FL core (aggregation/fl), which the
# unit tests cover directly. Measured in the pytest process only: the servers and nodes that e2e tests
# start as subprocesses are not counted ([tool.coverage] in pyproject.toml).
COVERAGE_FLOOR ?= 88
FL_COVERAGE_FLOOR ?= 95

# The SQLite step also runs the scaled-mode e2e tests, which need the PostgreSQL role: prepare it
# here, not only in test-postgres, so a fresh machine passes in this order.
test-sqlite: $(VENV)/.dev $(VENDOR)
	scripts/services.sh packages postgres
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)
	$(BIN)/coverage report --include='aggregation/fl/*' --fail-under=$(FL_COVERAGE_FLOOR)

test-postgres: $(VENV)/.dev $(VENDOR)
	scripts/services.sh postgres
	DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest tests/integration

clean:
	rm -rf $(VENV) var static/vendor node_modules .pytest_cache .coverage

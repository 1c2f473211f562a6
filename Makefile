# The README's two commands. Everything else is a detail of these.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run banner test test-fast lint bench clean

# Some machines (this project's CI among them) set PYTHONDONTWRITEBYTECODE=1: every process
# the tests start (pytest's workers, the runner, listeners, workers, the wheel's venv) then
# compiles every module it imports again, a third of test-fast's time. An empty value is
# Python's "unset"; __pycache__/ is ignored by git.
export PYTHONDONTWRITEBYTECODE :=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# RUN_ARGS: e.g. `make run RUN_ARGS="-v --web-port 8001"`
run: $(STAMP)
	$(BIN)/python -m devkit.devstack run $(RUN_ARGS)

# The running copier's addresses and login again, from another terminal.
banner:
	$(BIN)/python -m devkit.devstack banner

# The whole suite in two runs: the tests that share nothing run on two pytest workers
# (each its own database); the slow ones (servers restarted, processes killed, the browser)
# and those with a live worker on the one private Redis run one at a time.
test: $(STAMP)
	$(BIN)/python -m devkit.devstack packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not slow and not worker" -n 2
	$(BIN)/python -m pytest -m "slow or worker"

# The edit-run loop: everything but the slow fault, replay, runner and live-worker tests,
# on two pytest workers sharing the private servers (a database each).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	COPIER_TEST_FAST=1 $(BIN)/python -m pytest -m "not slow and not worker" -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python manage.py copier_bench --private --followers 1
	$(BIN)/python manage.py copier_bench --private --followers 200

clean:
	rm -rf .stack

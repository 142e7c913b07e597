# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first
# (scripts/setup.sh is idempotent: seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint format clean

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/vla-ros demo --episodes 3

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache .hypothesis

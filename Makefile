# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first
# (scripts/setup.sh is idempotent: seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint format clean

setup:
	@bash scripts/setup.sh

# The main job: compress the embedded VLA (SparseGPT 2:4 + GLUESTICK r=16, the best row of
# docs/results.md at 0.85x the dense memory), then deploy that artifact on the ROS graph.
RUN_PRUNE ?= --method sparsegpt --pattern 2:4 --rank 16
RUN_ARTIFACT ?= runs/artifacts/default

run: setup
	$(VENV)/bin/vla-prune $(RUN_PRUNE) --output $(RUN_ARTIFACT) --overwrite
	$(VENV)/bin/vla-ros demo --episodes 3 --artifact $(RUN_ARTIFACT)

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache .hypothesis

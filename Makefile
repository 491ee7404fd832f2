# The README's two commands are `make demo` and `make test`; both build .venv first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cgaug-installed
DEMO_DIR ?= demo
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

STACK_DIR ?= .cgaug-stack

.PHONY: venv test test-fast test-slow demo demo-local stack-up stack-down lint bench gpu-check clean

venv: $(STAMP)

# Idempotent: re-runs pip only when the dependency files change.
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[all,dev]"
	touch $(STAMP)

test: venv
	$(PY) -m ruff check cgaug tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# The production path on this machine: Prefect server + pools + workers, then cgaug/generate on the pool.
demo: venv
	$(VENV)/bin/cgaug stack demo $(DEMO_DIR)

# The same data in one process, no server.
demo-local: venv
	$(VENV)/bin/cgaug demo $(DEMO_DIR)-local

stack-up: venv
	$(VENV)/bin/cgaug stack up --state $(STACK_DIR)

stack-down: venv
	$(VENV)/bin/cgaug stack down --state $(STACK_DIR)

lint: venv
	$(PY) -m ruff check cgaug tests benchmarks
	$(VENV)/bin/lint-imports

bench: venv
	$(PY) benchmarks/compose.py

# Every GPU figure in one time-boxed run (about 9 minutes on one H100/H200); results in gpu-check/.
gpu-check: venv
	PYTHON=$(PY) benchmarks/gpu_check.sh --out gpu-check

clean:
	-test -x $(VENV)/bin/cgaug && $(VENV)/bin/cgaug stack down --state $(DEMO_DIR)/stack
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-local .pytest_cache .ruff_cache

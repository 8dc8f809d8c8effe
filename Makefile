# The two commands: `make run` and `make test`. Both create .venv on first use.
PY ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRA ?= cpu,dev
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run test lint venv clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kws needs Python 3.11, got " + sys.version.split()[0]'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRA)]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/kws run-all

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check kws_core pipelines tests
	$(BIN)/ruff format --check kws_core pipelines tests

# Re-resolve and write constraints.txt (after changing pins in pyproject.toml).
lock:
	$(PY) -m venv /tmp/kws-lock-venv && /tmp/kws-lock-venv/bin/pip install -q --upgrade pip
	/tmp/kws-lock-venv/bin/pip install -q --dry-run --ignore-installed --report /tmp/kws-lock.json -e ".[cpu,dev]"
	$(PY) tools/write_constraints.py /tmp/kws-lock.json constraints.txt

clean:
	rm -rf $(VENV) data/ results/ mlruns/ mlflow.db

# Two commands (README): `make pipeline` runs the main job, `make test` runs the tests.
# Each installs what it needs into .venv on first use (pip, exact pins from requirements.lock).
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash

# Offline-first: analytics and hub access off (docs/stack.md §10). One variable per
# `export` line: `export A=1 B=2` would set A to "1 B=2".
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export HF_HOME := $(CURDIR)/.cache/hf
export PREFECT_HOME := $(CURDIR)/.prefect
# BENTOML_HOME: dore/env.py sets it (.bentoml here) in every dore process, the one place it is set.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export TOKENIZERS_PARALLELISM := false

.PHONY: install test pipeline bench lock prefect-up prefect-down
install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest -q

# The main job: the DVC stages of the embedded default (validate -> convert -> train -> evaluate ->
# package on a small real Re-DocRED subset, MiniLM, CPU); the data are imported on first use.
pipeline: install
	[ -d data ] || $(VENV)/bin/dore data import
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro package@docred
	$(VENV)/bin/dvc metrics show artifacts/docred/metrics.json
	@echo "packaged model:" && cat artifacts/docred/package.json

# A local Prefect server, the local-process work pool, the deployments of prefect.yaml and a worker.
prefect-up: install
	scripts/prefect_local.sh up

prefect-down:
	scripts/prefect_local.sh down

bench: install
	$(PY) bench/bench_decoding.py

lock:  # regenerate the lock from requirements.txt in a fresh venv
	rm -rf /tmp/dore-lock && python3.11 -m venv /tmp/dore-lock && /tmp/dore-lock/bin/pip install -q -r requirements.txt \
	  && /tmp/dore-lock/bin/pip freeze > requirements.lock

# Two commands (README): `make pipeline` runs the main job, `make test` runs the tests.
# Each installs what it needs into .venv on first use (pip, exact pins from requirements.lock).
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash

# Offline-first: analytics and hub access off (../shared/notes/stack.md §10).
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 BENTOML_DO_NOT_TRACK=true
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
export HF_HOME=$(CURDIR)/.cache/hf PREFECT_HOME=$(CURDIR)/.prefect BENTOML_HOME=$(CURDIR)/.bentoml
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 TOKENIZERS_PARALLELISM=false

.PHONY: install test pipeline bench lock
install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest -q

pipeline: install
	$(VENV)/bin/dore pipeline

bench: install
	$(PY) bench/bench_decoding.py

lock:  # regenerate the lock from requirements.txt in a fresh venv
	rm -rf /tmp/dore-lock && python3.11 -m venv /tmp/dore-lock && /tmp/dore-lock/bin/pip install -q -r requirements.txt \
	  && /tmp/dore-lock/bin/pip freeze > requirements.lock

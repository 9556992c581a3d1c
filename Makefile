# One command to run the pipeline on the synthetic default (make run), one to test (make test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUTPUT ?= runs
DATA ?= data/default
# The `default` preset (synthetic/generate.py); ROWS=N overrides its rows.
ROWS ?=
export TF_USE_LEGACY_KERAS := 1
export KEEP_SAMD_OUTPUT := $(abspath $(OUTPUT))
export KEEP_SAMD_DATA := $(abspath $(DATA))
# The tfx CLI keeps its pipeline registry in $$LOCAL_HOME (default ~/tfx/local): keep it with the runs.
export LOCAL_HOME := $(abspath $(OUTPUT))/tfx_home

.PHONY: setup run data test serve report clean

$(VENV)/.installed: requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-deps --ignore-requires-python -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

$(DATA)/truth.json: | $(VENV)/.installed
	$(PY) -m synthetic.generate --output $(DATA) --preset default $(if $(ROWS),--rows $(ROWS))

data: $(DATA)/truth.json

# make run: one console line per component and a summary; the rest goes to $(OUTPUT)/logs/<run>.log.
# make run VERBOSE=1: all of it on the terminal.
VERBOSE ?=
# The tfx CLI's own imports print TensorFlow's probes and google-api-core's FutureWarnings
# before it starts the pipeline file: quiet them. The run takes these back, so that its log
# still gets what they hide (pipelines/local_runner.py).
TFX := env $(if $(VERBOSE),KEEP_SAMD_VERBOSE=1,TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore \
	KEEP_SAMD_CLI_QUIETED="TF_CPP_MIN_LOG_LEVEL PYTHONWARNINGS") $(VENV)/bin/tfx

run: setup data
	@if [ -d "$(LOCAL_HOME)/keep_samd" ]; then what=update; else what=create; fi; \
	  $(TFX) pipeline $$what --pipeline_path=pipelines/local_runner.py --engine=local
	@$(TFX) run create --pipeline_name=keep_samd --engine=local

# CI runs every test, on PYTEST_WORKERS processes (pytest-xdist) that take whole files, the longest
# first; a run shared by several files happens once (tests/conftest.py). The summary ends with the
# 25 slowest steps and the suite's wall time (a warning past 30 minutes: tests/suite_budget.py).
# The fast tests alone: make test PYTEST_ARGS="-m 'not e2e and not slow'"; in one process: PYTEST_WORKERS=0
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS) tests

report: setup
	$(PY) -m pipelines.report --output $(OUTPUT)

serve: setup
	$(PY) -m serving.model_server --model_config_file $(OUTPUT)/serving/models.config

clean:
	rm -rf $(OUTPUT) data

# One command to run the pipeline on the synthetic default (make run), one to test (make test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUTPUT ?= runs
DATA ?= data/default
ROWS ?= 40000
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
	$(PY) -m synthetic.generate --output $(DATA) --rows $(ROWS)

data: $(DATA)/truth.json

run: setup data
	$(VENV)/bin/tfx pipeline create --pipeline_path=pipelines/local_runner.py --engine=local \
	  || $(VENV)/bin/tfx pipeline update --pipeline_path=pipelines/local_runner.py --engine=local
	$(VENV)/bin/tfx run create --pipeline_name=keep_samd --engine=local

test: setup
	$(PY) -m pytest -q tests

report: setup
	$(PY) -m pipelines.report --output $(OUTPUT)

serve: setup
	$(PY) -m serving.model_server --model_config_file $(OUTPUT)/serving/models.config

clean:
	rm -rf $(OUTPUT) data

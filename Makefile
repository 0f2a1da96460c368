# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment from pyproject.toml on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 300
AIRFLOW_HOME ?= $(CURDIR)/.lambdarec/airflow

.PHONY: demo test unit venv airflow clean

$(BIN)/lambdarec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/lambdarec

demo: venv
	$(BIN)/lambdarec demo --duration $(DURATION) --summary-json demo-summary.json

test: venv
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest -m unit

airflow: venv
	mkdir -p $(AIRFLOW_HOME)
	@echo "Airflow UI: http://localhost:8080 (login: admin; password printed below by airflow standalone)"
	PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(AIRFLOW_HOME) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__LOAD_EXAMPLES=False \
	LAMBDAREC_ROOT=$(CURDIR)/.lambdarec $(BIN)/airflow standalone

clean:
	rm -rf .lambdarec demo-summary.json

# The two commands of the README: `make demo` and `make test` (and `make up` / `make down` / `make ps`
# for the long-running platform). They create the
# virtual environment from pyproject.toml (with the dev and airflow extras) and
# resolve the JVM jars (Maven Central) on first use. `make lint` checks style,
# types and the layering's import contracts.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 900
AIRFLOW_HOME ?= $(CURDIR)/.lambdarec/airflow
LAMBDAREC_ROOT ?= $(CURDIR)/.lambdarec

.PHONY: demo test unit lint docs docs-serve venv jars blas postgres prometheus chromium bench-tools airflow up down ps clean

$(BIN)/lambdarec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,airflow,docs]'
	touch $@

venv: $(BIN)/lambdarec

# Kafka broker, Spark's Kafka connector and Delta: pinned in lambdarec/jvm/pom.xml, fetched
# once with mvn into .jars/ (LAMBDAREC_JARS_DIR to move it) and reused while the pom is unchanged.
jars: venv
	@$(BIN)/lambdarec jars

# Spark ALS silently falls back to a ~3x slower Java BLAS without a native one.
blas:
	@/sbin/ldconfig -p | grep -q libopenblas || echo "NOTE: no native BLAS found; Spark ALS will use Java BLAS (about 3x slower). Install it with: sudo apt-get install libopenblas0-pthread"

# Debian package $(2) unless `$(1)` finds it already there: apt-get as root, else with sudo.
apt_install = $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2); \
	  else sudo apt-get install -y --no-install-recommends $(2); fi; }

# Postgres, the operational database CDC reads: Debian's package (the product runs its own cluster
# under LAMBDAREC_ROOT with `lambdarec postgres`, never the system service).
postgres:
	@$(call apt_install,ls /usr/lib/postgresql/*/bin/postgres,postgresql)

# promtool, which checks and unit-tests the alert rules in ops/prometheus/: Debian's prometheus
# package (nothing uses its system service; in containers it is not even started).
prometheus:
	@$(call apt_install,command -v promtool,prometheus)

# Chromium, the headless browser the dashboard's browser test drives (with playwright from PyPI):
# Debian's package, at /usr/bin/chromium.
chromium:
	@$(call apt_install,test -x /usr/bin/chromium,chromium)

# wrk, the HTTP load generator of bench/ingest.py and bench/serve.py (C, so it takes little of
# the CPU it measures).
bench-tools:
	@$(call apt_install,command -v wrk,wrk)

demo: jars blas postgres prometheus
	$(BIN)/lambdarec demo --duration $(DURATION) --summary-json demo-summary.json

# `make test` runs every tier. CI runs `make unit` first and then `make test SKIP_UNIT=1`, so no tier runs twice.
test: jars blas postgres prometheus chromium
	$(BIN)/pytest $(if $(SKIP_UNIT),-m "not unit")

unit: jars prometheus
	$(BIN)/pytest -m unit

# ruff (style and likely bugs), mypy (types) and import-linter (the layering: batch, speed
# and serving import only lambdarec and schemas; schemas imports nothing of ours), all
# configured in pyproject.toml.
LINTED := lambdarec schemas batch speed serving deploy dags tests bench docs/_hooks

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The docs site (mkdocs.yml, docs/): built into site/ with --strict, so a broken link or anchor fails
# it; the configuration page's reference is generated from lambdarec/settings.py at build time.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

AIRFLOW_PORT ?= 8080
AIRFLOW_PASSWORDS := $(AIRFLOW_HOME)/simple_auth_manager_passwords.json

# Airflow standalone (API server + UI, scheduler, dag-processor, SQLite) on dags/, sized for the
# machine as under `make up` (deploy.embedded.airflow.sizing: one task slot per two cores).
# The admin password is generated once into $(AIRFLOW_PASSWORDS) and printed here.
airflow: jars
	mkdir -p $(AIRFLOW_HOME)
	@test -s $(AIRFLOW_PASSWORDS) || $(BIN)/python -c "import json, secrets; print(json.dumps({'admin': secrets.token_urlsafe(12)}))" > $(AIRFLOW_PASSWORDS)
	@echo "Airflow UI: http://localhost:$(AIRFLOW_PORT)  login: admin  password: $$($(BIN)/python -c "import json; print(json.load(open('$(AIRFLOW_PASSWORDS)'))['admin'])")"
	@echo "DAGs: $(CURDIR)/dags (lambdarec_batch hourly, lambdarec_maintenance daily, lambdarec_privacy every 10 minutes); lake: $(LAMBDAREC_ROOT)"
	PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(AIRFLOW_HOME) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$(AIRFLOW_PASSWORDS) \
	LAMBDAREC_ROOT=$(LAMBDAREC_ROOT) env $$($(BIN)/python -c "from deploy.embedded.airflow import sizing; print(*(k + '=' + v for k, v in sizing().items()))") \
	$(BIN)/airflow standalone

# The long-running platform (`lambdarec up`): broker, Postgres + CDC, speed job, serving and Airflow
# (scheduler, dag-processor, API server on AIRFLOW_PORT, sized for the machine) under a supervisor that
# restarts what dies; state and logs in $(LAMBDAREC_ROOT)/platform/. A laptop's: the development
# pseudonym key is allowed (set LAMBDAREC_PSEUDONYM_KEY for real data). UP_ARGS='--without airflow' etc.
up: jars blas postgres prometheus
	LAMBDAREC_ROOT=$(LAMBDAREC_ROOT) LAMBDAREC_ALLOW_DEVELOPMENT_KEY=$${LAMBDAREC_ALLOW_DEVELOPMENT_KEY:-true} \
	$(BIN)/lambdarec up --airflow-port $(AIRFLOW_PORT) $(UP_ARGS)

down: venv
	LAMBDAREC_ROOT=$(LAMBDAREC_ROOT) $(BIN)/lambdarec down

ps: venv
	LAMBDAREC_ROOT=$(LAMBDAREC_ROOT) $(BIN)/lambdarec ps

clean:
	rm -rf .lambdarec demo-summary.json demo-report.html

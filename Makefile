# paylink — quick start: `make run` (stack + migrate + serve), then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK := scripts/stack.sh
ENV = eval "$$($(STACK) env)" &&
# `make up KAFKA_NODES=3 PG_STANDBY=1`: a three-broker cluster and a PostgreSQL standby (docs/stack.md).
ifdef KAFKA_NODES
export PAYLINK_KAFKA_NODES := $(KAFKA_NODES)
endif
ifdef PG_STANDBY
export PAYLINK_PG_STANDBY := $(PG_STANDBY)
endif

.PHONY: help venv generate check-generated up down status migrate run serve test test-faults fault-results lint buf demo bench clean workspace wheel tools

help:
	@echo "make run          bring up PostgreSQL + Kafka, migrate, serve on 127.0.0.1:50051 (metrics :9464)"
	@echo "make test         bring up the stack if needed, run the test suite"
	@echo "make test-faults  fault-injection tests (killed worker, broker outage, ...; FAULT_TESTS=... for some)"
	@echo "make fault-results  the fault tests, recording docs/fault-results.json and the docs' figures (FAULT_TESTS=... for some)"
	@echo "make lint         ruff, mypy --strict, buf lint, buf breaking (scripts/buf_breaking.sh)"
	@echo "make generate     regenerate generated/ from protos/"
	@echo "make wheel        build the client package paylink-proto (paylink.v1) into dist/"
	@echo "make tools        build buf, grpcurl and ghz into .tools/ (npm, Go) and install kcat (apt-get)"
	@echo "make up|down|status   the local stack (see docs/stack.md)"
	@echo "make demo         the On Demand Updates scenario against a running server"
	@echo "make bench        benchmarks (see BENCHMARKS.md)"

# generated/ is the paylink-proto distribution (paylink.v1, docs/client.md). The venv installs it as a
# consumer would (no editable link, no .pth), so it is reinstalled whenever generated/ changes.
PROTO_FILES := generated/pyproject.toml $(wildcard generated/paylink/*.py generated/paylink/py.typed generated/paylink/v1/*.py* generated/paylink/v1/*.binpb)
PURELIB = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
WHEEL_DIR ?= dist

$(STAMP): pyproject.toml $(PROTO_FILES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@rm -f $(PURELIB)/paylink_generated.pth  # the path hack of earlier venvs
	@rm -rf generated/build generated/*.egg-info
	$(PY) -m pip install -q --no-deps --force-reinstall ./generated
	@rm -rf generated/build generated/*.egg-info
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

generate: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) scripts/generate.sh
	$(PY) -m pip install -q --no-deps --force-reinstall ./generated
	@rm -rf generated/build generated/*.egg-info
	@touch $(STAMP)

# The client package: paylink-proto-<version>-py3-none-any.whl in $(WHEEL_DIR) (docs/client.md).
wheel: $(STAMP)
	@rm -rf generated/build generated/*.egg-info
	@mkdir -p $(WHEEL_DIR)
	$(PY) -m pip wheel -q --no-deps --wheel-dir $(WHEEL_DIR) ./generated
	@rm -rf generated/build generated/*.egg-info
	@ls $(WHEEL_DIR)/paylink_proto-*.whl

# Every tool the docs use, built now: fails (does not skip) when one cannot be built.
tools:
	@scripts/tools.sh buf >/dev/null
	@scripts/tools.sh grpcurl >/dev/null
	@scripts/tools.sh ghz >/dev/null
	@scripts/tools.sh kcat >/dev/null
	@echo "tools: buf, grpcurl and ghz are in .tools/, kcat is on PATH"

check-generated: generate
	@git diff --exit-code --stat -- generated || (echo "generated/ is stale: run make generate and commit" && exit 1)
	@test -z "$$(git status --porcelain -- generated)" || (git status --porcelain -- generated; echo "generated/ has untracked files" && exit 1)

up:
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

migrate: $(STAMP) up
	@$(ENV) $(PY) -m service migrate

run: $(STAMP) up
	@$(ENV) $(PY) -m service migrate && $(ENV) PAYLINK_METRICS_PORT=$${PAYLINK_METRICS_PORT:-9464} exec $(PY) -m service serve

serve: run

workspace: $(STAMP) up
	@$(ENV) $(PY) -m service workspace create "$${NAME:-local}"

test: $(STAMP) up
	@$(ENV) $(PY) -m pytest -m "not faults" $(PYTEST_ARGS)

# `make test-faults FAULT_TESTS=tests/faults/test_worker_killed.py` runs some of them; PYTEST_ARGS adds options.
FAULT_TESTS ?= tests/faults
test-faults: $(STAMP) up
	@$(ENV) $(PY) -m pytest -m faults $(FAULT_TESTS) $(PYTEST_ARGS)

# The fault tests, recording the figures of those that pass in the one committed results file,
# docs/fault-results.json (the other tests keep their entries), then scripts/fault_figures.py renders
# it into docs/reliability.md and docs/deployment.md. `make fault-results FAULT_TESTS=tests/faults/test_fleet.py`
# re-records only those.
fault-results: $(STAMP) up
	@$(ENV) PAYLINK_RECORD_FAULT_RESULTS=1 $(PY) -m pytest -m faults $(FAULT_TESTS) $(PYTEST_ARGS)
	@$(PY) scripts/fault_figures.py

buf:
	@scripts/tools.sh buf >/dev/null

lint: $(STAMP) buf
	$(VENV)/bin/ruff check service tests bench scripts
	$(VENV)/bin/ruff format --check service tests bench scripts
	$(VENV)/bin/mypy
	@BUF=$$(scripts/tools.sh buf) && $$BUF lint && BUF=$$BUF scripts/buf_breaking.sh

demo: $(STAMP)
	@$(ENV) PYTHONPATH=$(CURDIR) $(PY) scripts/demo.py

# The peers (procrastinate, PgQueuer) are the `bench` extra: installed for make bench only.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed up
	@BENCH_ARGS="--profile $(BENCH_ARGS)" bench/bench.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist

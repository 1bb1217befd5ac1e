# paylink — quick start: `make run` (stack + migrate + serve), then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK := scripts/stack.sh
ENV = eval "$$($(STACK) env)" &&

.PHONY: help venv generate check-generated up down status migrate run serve test test-faults lint buf demo bench clean workspace

help:
	@echo "make run          bring up PostgreSQL + Kafka, migrate, serve on 127.0.0.1:50051 (metrics :9464)"
	@echo "make test         bring up the stack if needed, run the test suite"
	@echo "make test-faults  fault-injection tests (killed worker, broker outage, ...)"
	@echo "make lint         ruff, mypy --strict, buf lint, buf breaking"
	@echo "make generate     regenerate generated/ from protos/"
	@echo "make up|down|status   the local stack (see docs/stack.md)"
	@echo "make demo         the On Demand Updates scenario against a running server"
	@echo "make bench        benchmarks (see BENCHMARKS.md)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# generated/ holds the protobuf packages (paylink.v1): put it on the venv's path.
	@echo "$(CURDIR)/generated" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/paylink_generated.pth
	@touch $(STAMP)

venv: $(STAMP)

generate: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) scripts/generate.sh

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

test-faults: $(STAMP) up
	@$(ENV) $(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

buf:
	@scripts/tools.sh buf >/dev/null

lint: $(STAMP) buf
	$(VENV)/bin/ruff check service tests bench
	$(VENV)/bin/ruff format --check service tests bench
	$(VENV)/bin/mypy
	@BUF=$$(scripts/tools.sh buf) && $$BUF lint && \
	if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $$BUF breaking --against '.git#branch=main' && echo "buf breaking: no breaking change against main"; \
	else echo "buf breaking: main has no contracts yet, skipped"; fi

demo: $(STAMP)
	@$(ENV) PYTHONPATH=$(CURDIR) $(PY) scripts/demo.py

# The peers (procrastinate, PgQueuer) are the `bench` extra: installed for make bench only.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed up
	@BENCH_ARGS="--profile $(BENCH_ARGS)" bench/bench.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# qnet: the single entry point. `make run` starts the mesh, `make test` runs every test tier.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
GEN        := gen
PROTO_SRC  := $(shell find protos -name '*.proto')
export PYTHONPATH := $(CURDIR):$(CURDIR)/$(GEN)

.PHONY: help setup protos run run-cluster soak k8s-render test test-unit test-integration test-e2e test-tools openapi openapi-tools lint bench api-key clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

setup: $(STAMP) $(GEN)/.stamp ## Create the venv, install pinned dependencies, generate code

$(GEN)/.stamp: $(STAMP) $(PROTO_SRC) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	touch $@

protos: $(GEN)/.stamp ## Generate Python stubs and Envoy's descriptor set from protos/

openapi: setup openapi-tools ## Regenerate deploy/openapi/qnet.swagger.json (OpenAPI 2.0) from the public protos
	$(PY) scripts/gen_openapi.py

# protoc's Swagger plugin (Debian's golang-grpc-gateway), installed when missing: make openapi and a unit test use it.
openapi-tools:
	@scripts/test_tools.sh openapi

run: setup ## Start the whole mesh behind Envoy on 127.0.0.1:$${QNET_HTTP_PORT:-8080}
	$(PY) -m services.mesh

run-cluster: setup ## The cluster topology on one machine: replicas, an adapter service per provider, PostgreSQL
	@[ -n "$${QNET_DATABASE_URL:-}" ] || scripts/test_tools.sh postgresql
	$(PY) -m services.mesh --cluster

k8s-render: setup ## Regenerate Envoy's config for Kubernetes (deploy/k8s/base/generated/) from the template
	$(PY) deploy/k8s/render.py

api-key: setup ## Create an API key: make api-key NAME=alice
	$(PY) -m qnet_common.keys create --name "$${NAME:-$${USER:-dev}}"

lint: setup ## ruff and the import-linter layering contract
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test-unit: setup test-tools ## Unit tests: domain and servicers, no sockets (promtool checks the alerts)
	$(PY) -m pytest -q tests/unit

test-integration: setup test-tools ## Integration tests: real aio servers on port 0, real SQLite and PostgreSQL
	$(PY) -m pytest -q tests/integration

test-e2e: setup test-tools ## End-to-end tests: the real mesh behind real Envoy, as an HTTP and WebSocket client
	$(PY) -m pytest -q tests/e2e

# Real peers the tests drive (PostgreSQL, Prometheus, Node's `ws`), installed when missing.
test-tools:
	@scripts/test_tools.sh

test: lint test-unit test-integration test-e2e ## Every tier

soak: setup test-tools ## Ten minutes at a fixed rate through Envoy: no errors, flat memory (bench/results/soak.md)
	QNET_SOAK_S=600 $(PY) -m pytest -q -s tests/e2e/test_soak.py

# bench/bench_e2e.py loads the mesh with wrk (Debian's package), installed when missing; without it a Python
# client measures instead, and on two cores that client is the bottleneck.
bench: setup ## Benchmarks; results go to bench/results/
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; } \
	  || echo "bench: wrk is not installed (Debian package wrk); bench_e2e.py uses its Python client instead"
	$(PY) bench/run_all.py

clean: ## Remove generated code and local data
	rm -rf $(GEN) var .pytest_cache

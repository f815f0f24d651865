# Keyraft: the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := target/release
DEMO_DIR ?= keyraft-data

.PHONY: run test build release unit integration fmt fmt-check lint crds crds-check chart-lint tools bench clean help

help:
	@echo "make run        build, start a local 3-node cluster, write and read sample data (Ctrl-C stops it)"
	@echo "make test       everything CI runs: format check, unit, storage-suite, integration, CRD drift, chart checks"
	@echo "make bench      start a local cluster and run keyraft bench with 1, 16 and 64 clients"
	@echo "make crds       regenerate crds/ from the operator's Rust types"
	@echo "make chart-lint helm lint + template + rendered-manifest checks with the pinned Helm"
	@echo "make tools      fetch the pinned Helm and kubectl into tools/bin"

release:
	$(CARGO) build --release -p keyraft-node -p keyraft-client

build:
	$(CARGO) build --workspace --all-targets

# A local cluster of real node processes on loopback with sample data.
run: release
	$(RELEASE_BIN)/keyraft local up --nodes 3 --partitions 8 --replication-factor 3 --data-dir $(DEMO_DIR) --demo

test: fmt-check tools unit integration chart-lint

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests: no processes, no network.
unit:
	$(CARGO) test --workspace --lib --bins

# openraft's storage suite, then real node processes on loopback. One test at a time: each runs a cluster
# and fault timing on 2 cores should not depend on a neighbour's load.
integration:
	$(CARGO) build -p keyraft-node
	$(CARGO) test -p keyraft-node --test '*' -- --test-threads 1
	$(CARGO) test -p keyraft-operator --test builders

crds:
	$(CARGO) run -q -p keyraft-operator -- crd > crds/keyraftcluster.yaml
	cp crds/keyraftcluster.yaml charts/keyraft-operator/crds/keyraftcluster.yaml

# CRD drift and schema checks alone (chart-lint runs them too).
crds-check:
	$(CARGO) test -q -p keyraft-operator --test crd

tools:
	hack/fetch-k8s-tools.sh

chart-lint: tools
	hack/chart-check.sh

bench: release
	hack/bench.sh

clean:
	$(CARGO) clean
	rm -rf $(DEMO_DIR) tools

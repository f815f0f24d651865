# Keyraft: the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := target/release
DEMO_DIR ?= keyraft-data
# Tag of the container images: by default the node version the operator gives
# KeyraftClusters that name none (DEFAULT_VERSION in operator/src/crd.rs).
KEYRAFT_VERSION ?= $(shell sed -n 's/^pub const DEFAULT_VERSION: &str = "\(.*\)";$$/\1/p' operator/src/crd.rs)

.PHONY: chaos chaos-short run run-local test build release unit integration e2e k8s-sim fmt fmt-check lint crds crds-check chart-lint tools bench bench-compare bench-rebalance memory-test clean help images kind-up kind-e2e kind-down workspace-hack

help:
	@echo "make run        the operator on the local Kubernetes simulator: helm install, a 3-node cluster, data flowing (Ctrl-C stops it)"
	@echo "make run-local  three node processes on loopback, no Kubernetes (Ctrl-C stops it)"
	@echo "make test       everything CI runs: format check, unit, storage-suite, integration, CRD drift, chart checks"
	@echo "make chaos      the nemesis: SECONDS=600 SEED=... FAULTS=process,network,membership,disk, then the linearizability checker"
	@echo "make bench      start a local cluster and run keyraft bench with 1, 16 and 64 clients"
	@echo "make bench-compare  Keyraft and etcd side by side (installs etcd from Debian if missing; BENCH_SECONDS=10 per row)"
	@echo "make bench-rebalance  time and bytes/s of a 3 -> 5 rebalance: empty, 1 GiB unthrottled and throttled (release build)"
	@echo "make memory-test  node RSS stays bounded with several times the storage engine budget of data (node/tests/memory.rs)"
	@echo "make crds       regenerate crds/ from the operator's Rust types"
	@echo "make workspace-hack  regenerate workspace-hack/ with cargo hakari after a dependency change"
	@echo "make chart-lint helm lint + template + rendered-manifest checks with the pinned Helm"
	@echo "make tools      fetch the pinned Helm and kubectl into tools/bin"
	@echo "make e2e        simulator tests with the real kubectl and Helm"
	@echo "make k8s-sim    run the local Kubernetes simulator (kubeconfig in ./kubeconfig)"
	@echo "make images     docker build the node, operator and e2e images (tag KEYRAFT_VERSION, default the operator's node version) plus the upgrade scenarios' node 0.2.0, 0.3.0-broken and operator 0.2.0-next"
	@echo "make kind-up    kind cluster keyraft (3 workers, zones a/b/c), images loaded, operator chart installed (needs docker, kind)"
	@echo "make kind-e2e   kind-up, then the e2e scenarios and day2 tests as a Job inside the kind cluster"
	@echo "make kind-down  delete the kind cluster keyraft"

release:
	$(CARGO) build --release -p keyraft-node -p keyraft-client

build:
	$(CARGO) build --workspace --all-targets

# The main job: the operator on the local Kubernetes simulator (real Helm
# and kubectl), examples/basic.yaml applied, data written and read through
# the client Service. Runs until Ctrl-C, then stops everything it started.
run: tools
	$(CARGO) build -p keyraft-node -p keyraft-operator -p keyraft-e2e -p keyraft-client
	hack/run-demo.sh

# Without Kubernetes: three node processes on loopback with sample data.
run-local: release
	$(RELEASE_BIN)/keyraft local up --nodes 3 --partitions 8 --replication-factor 3 --data-dir $(DEMO_DIR) --demo

test: fmt-check lint tools unit integration chaos-short e2e chart-lint

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests: no processes, no network. With the node's failpoints compiled
# in (off unless a test sets one), the node library built here is the one
# every later target links: workspace-hack/ gives all crates the same
# third-party features, so no target builds a dependency again.
unit:
	$(CARGO) test --workspace --lib --bins --features keyraft-node/failpoints

# openraft's storage suite, then real node processes on loopback (the backup
# tests also run the keyraft CLI and moto, an S3-compatible server from PyPI).
# One build with failpoints serves every file (they stay off until a test
# sets one; crash_points does). One test at a time: each runs a cluster and
# fault timing on 2 cores should not depend on a neighbour's load.
integration:
	hack/s3-server.sh --install
	$(CARGO) build -p keyraft-client --bin keyraft
	$(CARGO) test -p keyraft-node --features failpoints --test '*' -- --test-threads 1
	$(CARGO) test -p keyraft-operator --test builders

# The nemesis (chaos/): faults from a seeded schedule while clients record a
# history, then the linearizability checker. Network faults need root.
SECONDS ?= 600
SEED ?=
FAULTS ?= process,network,membership,disk
chaos:
	hack/chaos-deps.sh
	$(CARGO) build -p keyraft-node -p keyraft-chaos --features keyraft-node/failpoints
	target/debug/keyraft-chaos run --seconds $(SECONDS) --faults $(FAULTS) $(if $(SEED),--seed $(SEED))

# The short run of `make test`: about 60 s, fixed seed.
chaos-short:
	hack/chaos-deps.sh
	$(CARGO) build -p keyraft-node --features failpoints
	$(CARGO) test -p keyraft-chaos --test nemesis -- --test-threads 1 --nocapture

# The local Kubernetes simulator driven by the real kubectl and Helm
# (needs root: it writes pod DNS names into /etc/hosts while it runs). The
# backup scenario also runs moto (an S3-compatible server) and the keyraft CLI.
# The node binary is the failpoints build of `make chaos-short` (failpoints
# stay off unless a test sets one).
e2e: tools
	hack/s3-server.sh --install
	$(CARGO) build -p keyraft-node --features failpoints
	$(CARGO) build -p keyraft-operator -p keyraft-e2e -p keyraft-client
	$(CARGO) test -p keyraft-e2e -- --test-threads 2

# A simulator to point kubectl and helm at (kubeconfig written to ./kubeconfig).
k8s-sim: tools
	$(CARGO) build -p keyraft-node -p keyraft-operator -p keyraft-e2e
	target/debug/keyraft-k8s-sim serve --listen 127.0.0.1:6443 --kubeconfig-out kubeconfig --state-dir k8s-sim-state

# After changing a dependency: every crate depends on workspace-hack/, which
# pins the union of third-party features (failpoints stay opt-in).
workspace-hack:
	command -v cargo-hakari >/dev/null || $(CARGO) install cargo-hakari --locked
	$(CARGO) hakari generate
	$(CARGO) hakari manage-deps -y

crds:
	$(CARGO) run -q -p keyraft-operator -- crd > crds/keyraftcluster.yaml
	$(CARGO) run -q -p keyraft-operator -- crd backup > crds/keyraftbackup.yaml
	cp crds/keyraftcluster.yaml crds/keyraftbackup.yaml charts/keyraft-operator/crds/

# CRD drift and schema checks alone (chart-lint runs them too).
crds-check:
	$(CARGO) test -q -p keyraft-operator --test crd

tools:
	hack/fetch-k8s-tools.sh

chart-lint: tools
	hack/chart-check.sh

bench: release
	hack/bench.sh

# Keyraft against etcd on this machine, one table (not part of `make test`).
bench-compare:
	hack/bench-compare.sh

# Time and bytes/s of a 3 -> 5 rebalance: empty partitions, 1 GiB
# unthrottled and with --snapshot-send-bytes-per-sec (node/tests/rebalance_bench.rs).
bench-rebalance:
	$(CARGO) test --release -p keyraft-node --test rebalance_bench -- --ignored --nocapture

# Resident memory of nodes holding several times their storage-engine budget
# (node/tests/memory.rs; minutes in a debug build).
memory-test:
	$(CARGO) test -p keyraft-node --test memory -- --ignored --test-threads 1 --nocapture

# Container images (Docker with BuildKit; build context: the repository root).
# No provenance attestation: it breaks `kind load docker-image` under the containerd image store.
images:
	DOCKER_BUILDKIT=1 docker build --provenance=false -f images/node.Dockerfile -t keyraft/keyraft-node:$(KEYRAFT_VERSION) .
	DOCKER_BUILDKIT=1 docker build --provenance=false -f images/node-variant.Dockerfile --build-arg BASE=keyraft/keyraft-node:$(KEYRAFT_VERSION) --target v0.2.0 -t keyraft/keyraft-node:0.2.0 .
	DOCKER_BUILDKIT=1 docker build --provenance=false -f images/node-variant.Dockerfile --build-arg BASE=keyraft/keyraft-node:$(KEYRAFT_VERSION) --target v0.3.0-broken -t keyraft/keyraft-node:0.3.0-broken .
	DOCKER_BUILDKIT=1 docker build --provenance=false -f images/operator.Dockerfile -t keyraft/keyraft-operator:$(KEYRAFT_VERSION) .
	docker tag keyraft/keyraft-operator:$(KEYRAFT_VERSION) keyraft/keyraft-operator:0.2.0-next
	DOCKER_BUILDKIT=1 docker build --provenance=false -f images/e2e.Dockerfile -t keyraft/keyraft-e2e:$(KEYRAFT_VERSION) .

# The same scenarios on a real cluster where docker and kind exist (e2e/kind/README.md).
kind-up:
	KEYRAFT_VERSION=$(KEYRAFT_VERSION) e2e/kind/kind-up.sh

kind-e2e: kind-up
	KEYRAFT_VERSION=$(KEYRAFT_VERSION) e2e/kind/kind-e2e.sh

kind-down:
	kind delete cluster --name keyraft
	rm -f e2e/kind/kubeconfig

clean:
	$(CARGO) clean
	rm -rf $(DEMO_DIR) tools

# audit-guard — see README.md. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
CARGO ?= cargo
# Cargo builds are cached under the home directory, not in the repository, so a fresh clone
# (CI) reuses them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/audit-guard/target
export DATABASE_URL_TEST ?= postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard

.PHONY: deps build release dist check imports test test-unit test-e2e test-faults e2e-node lint fmt run certs manifests bench controlplane node image node-clean helm chart postgres clean

build:
	$(CARGO) build --all-targets

## The Debian packages the tests, the node and the benchmarks need (PostgreSQL, promtool,
## containerd, runc, CNI plugins, umoci, iptables, ipset, wrk): installed when missing, as root;
## as another user it prints the exact apt-get line and stops.
deps:
	@bash scripts/install-deps.sh

release:
	$(CARGO) build --release

## The control plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl), built once from Go modules.
controlplane:
	@bash controlplane/build.sh >/dev/null

## The node's binaries and images (kubelet, kube-scheduler, kube-proxy, CoreDNS, kube-router, pause, probe), built once.
node: deps
	@bash controlplane/build.sh node >/dev/null

## The audit-guard image without Docker: a static binary in an OCI archive under ~/.cache/audit-guard/image.
image: deps
	@bash scripts/image.sh >/dev/null

## The release tarball: the static binary, README, auditors' guide, changelog, with its SHA-256 (dist/).
dist:
	@bash scripts/dist.sh >/dev/null

## The helm client the chart is tested with, built once from its Go module (tools/helm).
helm:
	@bash tools/helm/build.sh >/dev/null

## torchwood's litewitness and witnessctl (the Go witness the log is tested against), built once
## from their Go module (tools/litewitness).
.PHONY: litewitness
litewitness:
	@bash tools/litewitness/build.sh >/dev/null

## The chart alone: helm lint --strict, templates per cert mode, schema, drift against kustomize; alerts; dashboard queries;
## install, upgrade and uninstall on the control plane.
chart: controlplane helm
	$(CARGO) test --test helm_chart --test alerts
	$(CARGO) test --test e2e -- dashboard:: helm::

postgres: deps
	@bash scripts/postgres.sh start

## The fast lane (a few minutes warm, no control plane, no database): formatting, clippy, unused
## dependencies, module boundaries and the unit tests. CI runs it first, so a lint slip fails in minutes.
check: lint imports test-unit

## Module boundaries: the evidence module (what an auditor checks offline) imports nothing of the
## server, the auditor's commands, the webhook or the controller; Data Storage has no import cycle.
imports:
	python3 scripts/module-imports.py src/evidence --imports-nothing-from datastorage,auditor,webhook,controller
	python3 scripts/module-imports.py src/datastorage --cycles

## Everything: lint, unit tests, end-to-end tests on a real control plane and PostgreSQL, fault
## tests, the chart, and the shipped manifests and chart as pods on a real node (e2e_node, as root).
test: deps controlplane helm litewitness node image dist postgres lint
	@mkdir -p $(CARGO_TARGET_DIR)
	set -o pipefail; $(CARGO) test --no-fail-fast --workspace --lib --bins --tests -- --test-threads=4 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.log
	@bash scripts/test-summary.sh $(CARGO_TARGET_DIR)/test-output.log

## The fault scenarios alone (real control plane, PostgreSQL restarts, a 60 s outage); writes bench/faults.md.
test-faults: deps controlplane postgres
	AUDIT_GUARD_FAULTS_TABLE=$(CURDIR)/bench/faults.md $(CARGO) test --test faults -- --nocapture --test-threads=1

## The shipped manifests as pods on a real node (root; tests/e2e_node.rs): install, lifecycle,
## leader loss and rollout during mass operations, NetworkPolicies.
e2e-node: deps controlplane node image certs
	$(CARGO) test --test e2e_node -- --nocapture

## Removes what a killed e2e-node run left on this host (processes, mounts, bridge, iptables, ipsets).
node-clean:
	$(CARGO) run --quiet --example node_clean

test-unit:
	$(CARGO) test --workspace --lib --bins

MACHETE := $(HOME)/.cache/audit-guard/tools/bin/cargo-machete

lint: $(MACHETE)
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MACHETE)

## cargo-machete (unused dependencies), built once from crates.io into the home cache.
$(MACHETE):
	@echo "building cargo-machete (first time only)"
	CARGO_TARGET_DIR=$(HOME)/.cache/audit-guard/target-tools $(CARGO) install cargo-machete --locked --version 0.9.2 --root $(HOME)/.cache/audit-guard/tools

fmt:
	$(CARGO) fmt

## The local quickstart: control plane, Data Storage on SQLite, webhook + controller, a demo.
run: controlplane
	@bash scripts/quickstart.sh

certs:
	@bash scripts/certs.sh

manifests:
	@bash scripts/manifests.sh

bench: deps
	@bash scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf .run

# pve-operator developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# The two distributions: the operator (the root) and the simulator pve-sim (simulator/).
PYPROJECTS := pyproject.toml simulator/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(PYPROJECTS) | sha256sum | cut -c1-16)
SCENARIO ?= examples/scenarios/two-nodes.yaml
SIM_PORT ?= 8006
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# One line per step, and pip's own output (a line per package, a progress bar per download), so a
# first install (about a minute) is never silent. The stamp is keyed by the hash of both pyproject.toml
# files: a change to either reinstalls, unchanged ones skip all of this. The simulator is installed after
# the operator, so that replacing an older operator (whose files once included the pve-sim script) cannot
# remove what the simulator just installed.
$(STAMP): $(PYPROJECTS)
	@started=$$(date +%s); \
	if [ -x $(VPY) ]; then echo "==> Updating $(VENV) (a pyproject.toml changed)"; \
	else echo "==> Creating $(VENV) with $$($(PYTHON) --version 2>&1) ($(PYTHON))…"; $(PYTHON) -m venv $(VENV) || exit 1; fi; \
	echo "==> Upgrading pip in $(VENV)…"; \
	$(VPY) -m pip install --upgrade --progress-bar on pip || exit 1; \
	echo "==> Installing the operator and the simulator (both editable) and the dev tools into $(VENV) (pip, about 1 min the first time)…"; \
	$(VPY) -m pip install --progress-bar on -e '.[dev]' || exit 1; \
	$(VPY) -m pip install --progress-bar on -e ./simulator || exit 1; \
	rm -f $(VENV)/.installed-* && touch $(STAMP); \
	echo "==> $(VENV) ready in $$(( $$(date +%s) - started )) s"

.PHONY: install
install: $(STAMP) ## Create .venv with the operator and the simulator (editable) and the dev tools
	@echo "==> $(VENV) is up to date (stamp $(notdir $(STAMP)))"

.PHONY: controlplane
controlplane: ## Build (or reuse from the cache) kube-apiserver, etcd and kubectl for the local control plane
	bash hack/build-controlplane.sh

# The third-party Proxmox clients of tests/conformance (versions in hack/conformance/versions.env), cached
# outside the clone like the control plane. The tests' session fixtures run the same scripts (a no-op once
# cached), so a plain `pytest` builds them too.
.PHONY: conformance-clients
conformance-clients: ## Build (or reuse from the cache) the third-party clients of tests/conformance: Ansible's venv, the go-proxmox client
	bash hack/build-ansible.sh
	bash hack/build-go-proxmox-client.sh

.PHONY: helm
helm: ## Build (or reuse from the cache) Helm v4 from its Go module, for the chart in deploy/helm (prints HELM=<path>)
	bash hack/build-helm.sh

.PHONY: promtool
promtool: ## Build (or reuse from the cache) promtool from the Prometheus Go module (checks deploy/monitoring/)
	bash hack/build-promtool.sh

.PHONY: test
test: install controlplane conformance-clients helm promtool ## Run every test suite (unit, simulator, control plane, integration, conformance, chart, monitoring); installs what it needs
	$(VPY) -m pytest $(PYTEST_ARGS)

.PHONY: conformance
conformance: install conformance-clients ## Only tests/conformance: real third-party clients (Ansible, go-proxmox) against pve_sim
	$(VPY) -m pytest tests/conformance $(PYTEST_ARGS)

.PHONY: monitoring
monitoring: install controlplane promtool ## Only tests/integration/test_monitoring.py: promtool check/test rules, dashboard queries, metrics against a real scrape
	$(VPY) -m pytest tests/integration/test_monitoring.py $(PYTEST_ARGS)

.PHONY: chaos
chaos: install controlplane ## The whole chaos fault matrix (tests/chaos) against the real operator; prints the recovery table
	PVE_CHAOS_FULL=1 $(VPY) -m pytest tests/chaos --chaos-full $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff, mypy --strict on pve_operator and pve_sim, import-linter boundaries
	$(VENV)/bin/ruff check operator simulator tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: demo
demo: install controlplane ## The whole product locally: control plane, pve_sim, operator, live view (DEMO_SECONDS=N for a smoke test)
	@echo "==> Starting the demo: control plane, pve_sim, operator, live view (hack/demo.py)…"
	@$(VPY) hack/demo.py

.PHONY: sim
sim: install ## Serve the Proxmox VE simulator on https://127.0.0.1:$(SIM_PORT) with $(SCENARIO)
	$(VPY) -m pve_sim serve --scenario $(SCENARIO) --port $(SIM_PORT)

.PHONY: crds
crds: install ## Regenerate crds/*.yaml from the API types (and the Helm chart's byte-identical copies)
	$(VPY) -m pve_operator.api.crdgen --output crds
	cp crds/*.yaml deploy/helm/pve-operator/crds/

.PHONY: bench
bench: install controlplane ## Run the benchmarks under bench/ (print tables; installs the MILP solver used as a baseline)
	$(VPY) -m pip install --quiet -e '.[dev,bench]' -e ./simulator
	for b in bench/sim_scale.py bench/planner.py bench/cpu_window.py bench/convergence.py bench/offload_latency.py bench/spread.py bench/clone_speed.py bench/rollout.py; do echo "== $$b"; $(VPY) $$b || exit 1; done

.PHONY: clean
clean: ## Remove the virtualenv and caches (the control-plane binary cache outside the clone stays)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

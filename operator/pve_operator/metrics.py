"""Prometheus metrics of the operator: `/metrics` on port PVE_OPERATOR_METRICS_PORT (9090; 0 disables it).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms, ``_ratio`` for
0..1 gauges). Label values are bounded: kinds, endpoint templates (never concrete ids), action
kinds and results, pool/node/policy names. Nothing here ever carries a credential.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

RECONCILIATIONS = Counter(
    "pve_operator_reconciliations_total",
    "Reconciliation cycles by kind (ProxmoxServerPool, ContainerPolicy) and result (ok, error).",
    ["kind", "result"],
)
RECONCILE_ERRORS = Counter(
    "pve_operator_reconcile_errors_total",
    "Reconciliation cycles that ended in an error condition, by kind and condition reason.",
    ["kind", "reason"],
)
PVE_REQUEST_SECONDS = Histogram(
    "pve_operator_pve_request_duration_seconds",
    "Latency of Proxmox VE API requests by method and endpoint template, and outcome (ok or error class).",
    ["method", "endpoint", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS = Counter(
    "pve_operator_actions_total",
    "Actions on CTs by kind (Create, Start, Delete, Repair, HandOver, Migrate, Offload, Restore) and result.",
    ["action", "result"],
)
REFUSALS = Counter(
    "pve_operator_refusals_total",
    "Actions the planner or the limits refused, by action kind and reason (cooldown, limit, no target, ...).",
    ["action", "reason"],
)
NODE_UTILIZATION = Gauge(
    "pve_operator_node_utilization_ratio",
    "Node usage at the last sample, 0..1, by pool, node and metric (cpu, memory, disk).",
    ["namespace", "pool", "node", "metric"],
)
MANAGED_CONTAINERS = Gauge(
    "pve_operator_managed_containers",
    "CTs of a ContainerPolicy by state (Running, Stopped, Offloaded, Migrating, Creating, Missing).",
    ["namespace", "policy", "state"],
)

_TEMPLATES = (
    (re.compile(r"/nodes/[^/]+"), "/nodes/{node}"),
    (re.compile(r"/lxc/\d+"), "/lxc/{vmid}"),
    (re.compile(r"/tasks/[^/]+"), "/tasks/{upid}"),
    (re.compile(r"/pools/[^/]+"), "/pools/{poolid}"),
)


def endpoint_template(path: str) -> str:
    """``/nodes/srv-px1/lxc/3100/config`` → ``/nodes/{node}/lxc/{vmid}/config`` (bounded label values)."""
    for pattern, replacement in _TEMPLATES:
        path = pattern.sub(replacement, path)
    return path

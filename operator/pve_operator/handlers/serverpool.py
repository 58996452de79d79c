"""ProxmoxServerPool handlers: connect, read the cluster, write the node table and conditions.

Thin glue: validate the spec, take one snapshot, write status. Runs on create/update/resume and on a
timer whose period is the spec's ``balancing.intervalSeconds`` (Kopf timers have a fixed tick, so
the tick is short and each tick checks whether a sample is due).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from pve_operator.api.v1alpha1 import ConditionReason, ConditionStatus, ConditionType, ProxmoxServerPoolSpec
from pve_operator.api.v1alpha1.common import format_timestamp
from pve_operator.api.v1alpha1.serverpool import NodeStatus
from pve_operator.handlers.balancing import balance_pool, forget_pool_memory
from pve_operator.handlers.common import POOLS, REQUIRED_PRIVILEGES, contained, namespaced
from pve_operator.handlers.status import (
    ConditionUpdate,
    conditions_payload,
    failed,
    failure,
    node_statuses,
    now_utc,
    parse_conditions,
    with_conditions,
)
from pve_operator.metrics import NODE_UTILIZATION, RECONCILE_ERRORS, RECONCILIATIONS
from pve_operator.planning.model import ClusterSnapshot
from pve_operator.planning.pve_access import AccessProblems, PolicyNeeds, TagAccess, TagRules, access_problems
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveError,
    PveNotProxmox,
    PveUnreachable,
)
from pve_operator.runtime import MONITOR_TICK_SECONDS, ConfigurationError, OperatorRuntime

_last_sample: dict[str, float] = {}


@kopf.index(*POOLS)
def pool_specs(name: str, namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Pool specs by (namespace, name), for the ContainerPolicy handlers."""
    return {(namespaced(namespace), name): dict(spec)}


@kopf.index(*POOLS)
def pool_operations_in_flight(
    name: str, namespace: str | None, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], frozenset[int]]:
    """VMIDs the pool's balancing is migrating, offloading or restoring now (``status.inFlight``, the
    journal it writes before acting), for the ContainerPolicy handlers: repair leaves them alone."""
    entries = status.get("inFlight") or []
    return {(namespaced(namespace), name): frozenset(int(e["vmid"]) for e in entries if "vmid" in e)}


def missing_privileges(permissions_by_path: dict[str, dict[str, dict[str, int]]]) -> list[tuple[str, str]]:
    missing = []
    for path, privileges in REQUIRED_PRIVILEGES.items():
        granted = permissions_by_path.get(path, {}).get(path, {})
        missing += [(path, p) for p in privileges if not granted.get(p)]
    return missing


def read_tag_access(client: PveClient, permissions_on_root: Mapping[str, Mapping[str, int]]) -> TagAccess:
    """The cluster's tag rules and whether the user may set any tag (``Sys.Modify`` on ``/``)."""
    privileged = bool(permissions_on_root.get("/", {}).get("Sys.Modify"))
    if not permissions_on_root.get("/", {}).get("Sys.Audit"):
        # Without Sys.Audit on / PVE answers GET /cluster/options without user-tag-access and
        # registered-tags (pve-manager PVE/API2/Cluster.pm get_options): the rules cannot be told from
        # the defaults. PVE's answer to the first create tells instead.
        return TagAccess(None, privileged)
    try:
        rules: TagRules | None = TagRules.from_cluster_options(client.cluster_options())
    except (PveUnreachable, PveAuthenticationError, PveNotProxmox):
        raise
    except PveError:
        # An API without the endpoint: the rules stay unknown and PVE's answer to a create tells.
        rules = None
    return TagAccess(rules, privileged)


def policy_needs(policies: Sequence[Mapping[str, Any]]) -> list[PolicyNeeds]:
    """The bridges and tags of the pool's policies, from their ``policies_by_pool`` summaries."""
    return [
        PolicyNeeds(
            name=str(p["name"]),
            uid=str(p["uid"]),
            bridges=frozenset((str(b), int(v) or None) for b, v in p.get("bridges") or ()),
            tags=frozenset(p.get("tags") or ()),
        )
        for p in policies
    ]


@dataclass(frozen=True)
class _PoolProbe:
    """What one probe of the pool's Proxmox VE read: the version, a snapshot and the permissions."""

    pool: ProxmoxServerPoolSpec
    client: PveClient
    version: Mapping[str, Any]
    snapshot: ClusterSnapshot
    permissions: dict[str, dict[str, dict[str, int]]]
    access: AccessProblems


def probe_pool(
    *,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    generation: int | None,
    body: Any,
    patch: kopf.Patch,
    runtime: OperatorRuntime,
    policies: Sequence[Mapping[str, Any]] = (),
) -> tuple[ProxmoxServerPoolSpec, PveClient, ClusterSnapshot] | None:
    """Sample the cluster and write the node table and conditions; the sample when the pool is Ready."""
    now = now_utc()
    sample: tuple[ProxmoxServerPoolSpec, PveClient, ClusterSnapshot] | None = None
    previous = parse_conditions(status.get("conditions"))
    try:
        probe = _read_pool(name, namespace, spec, runtime, policies)
    except Exception as exc:
        updates = failed(*failure(exc, where=f"Proxmox VE API at {spec.get('endpoint')}", redact=runtime.redact))
    else:
        nodes = _write_node_table(probe, patch, namespace, name, now)
        updates = _pool_conditions(probe, nodes)
        if updates[0].status is ConditionStatus.TRUE:
            sample = (probe.pool, probe.client, probe.snapshot)
    conditions = with_conditions(previous, updates, now=now, generation=generation)
    patch.status["conditions"] = conditions_payload(conditions)
    patch.status["observedGeneration"] = generation
    _announce_transition(body, previous, conditions)
    not_ready = any(u.type is ConditionType.READY and u.status is ConditionStatus.FALSE for u in updates)
    RECONCILIATIONS.labels("ProxmoxServerPool", "error" if not_ready else "ok").inc()
    if not_ready:
        RECONCILE_ERRORS.labels("ProxmoxServerPool", updates[0].reason).inc()
    return sample


def _read_pool(
    name: str, namespace: str, spec: Mapping[str, Any], runtime: OperatorRuntime, policies: Sequence[Mapping[str, Any]]
) -> _PoolProbe:
    """Validate the spec and read what the probe needs from Proxmox VE (raises what either raised)."""
    pool = ProxmoxServerPoolSpec.model_validate(spec)
    connection = runtime.connection(namespace, name, pool)
    client = connection.client
    version = client.version()
    snapshot = client.snapshot(time.time())
    permissions = {path: client.permissions(path) for path in REQUIRED_PRIVILEGES}
    needs = policy_needs(policies)
    sdn_paths = frozenset().union(*(p.sdn_paths() for p in needs))
    sdn_permissions = {path: client.permissions(path) for path in sorted(sdn_paths)}
    connection.tag_access = read_tag_access(client, client.permissions("/"))
    access = access_problems(connection.tag_access, snapshot, needs, sdn_permissions)
    return _PoolProbe(pool, client, version, snapshot, permissions, access)


def _write_node_table(
    probe: _PoolProbe, patch: kopf.Patch, namespace: str, name: str, now: datetime
) -> list[NodeStatus]:
    """status.nodes, nodeSummary, pveVersion and lastSampleTime, and the node utilisation gauges."""
    patch.status["pveVersion"] = str(probe.version.get("version", ""))
    nodes = node_statuses(probe.pool, probe.snapshot)
    for node in nodes:
        for metric, value in (("cpu", node.cpu_percent), ("memory", node.memory_percent), ("disk", node.disk_percent)):
            if value is not None:
                NODE_UTILIZATION.labels(namespace, name, node.name, metric).set(value / 100.0)
    patch.status["nodes"] = [n.to_dict() for n in nodes]
    patch.status["nodeSummary"] = f"{sum(1 for n in nodes if n.online)}/{len(nodes)}"
    patch.status["lastSampleTime"] = format_timestamp(now)
    return nodes


def _pool_conditions(probe: _PoolProbe, nodes: Sequence[NodeStatus]) -> list[ConditionUpdate]:
    """Ready (Connected, or the first of: nodes not in the cluster, missing privileges, blocking access
    problems) and Degraded (nodes offline, tags PVE would refuse)."""
    unknown = [n for n in probe.pool.node_names if n not in probe.snapshot.nodes]
    offline = [n.name for n in nodes if not n.online and n.name not in unknown]
    denied = missing_privileges(probe.permissions)
    if unknown:
        return failed(
            ConditionReason.NODE_NOT_FOUND,
            f"nodes {', '.join(unknown)} are not in the cluster (it has {', '.join(probe.snapshot.nodes)})",
        )
    if denied:
        listed = ", ".join(f"{priv} on {path}" for path, priv in denied)
        return failed(ConditionReason.PERMISSION_DENIED, f"the operator's Proxmox VE user lacks {listed}")
    if probe.access.blocking:
        return failed(*probe.access.blocking)
    online = sum(1 for n in nodes if n.online)
    message = f"connected to Proxmox VE {probe.version.get('version', '?')}; {online}/{len(nodes)} nodes online"
    ready = ConditionUpdate(ConditionType.READY, ConditionStatus.TRUE, ConditionReason.CONNECTED, message)
    if offline:
        degraded = ConditionUpdate(
            ConditionType.DEGRADED,
            ConditionStatus.TRUE,
            ConditionReason.NODE_OFFLINE,
            f"nodes offline: {', '.join(offline)}",
        )
    elif probe.access.warning:
        degraded = ConditionUpdate(
            ConditionType.DEGRADED, ConditionStatus.TRUE, ConditionReason.TAGS_NOT_ALLOWED, probe.access.warning
        )
    else:
        degraded = ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.FALSE, ConditionReason.AS_EXPECTED, "")
    return [ready, degraded]


def _announce_transition(body: Any, before: Any, after: Any) -> None:
    old = next((c for c in before if c.type == ConditionType.READY), None)
    new = next((c for c in after if c.type == ConditionType.READY), None)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return
    if new.status is ConditionStatus.TRUE:
        kopf.info(body, reason=new.reason, message=new.message)
    else:
        kopf.warn(body, reason=new.reason, message=new.message)


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS, field="spec")
@contained(MONITOR_TICK_SECONDS)
def pool_changed(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    **kwargs: Any,
) -> None:
    # Claim this sample before probing: the timer's first tick may come while the probe runs, and it
    # would probe the same old status again and announce the same transition a second time.
    _last_sample[str(meta.get("uid"))] = time.monotonic()
    ns = namespaced(namespace)
    probe_pool(
        name=name,
        namespace=ns,
        spec=dict(spec),
        status=dict(status),
        generation=meta.get("generation"),
        body=body,
        patch=patch,
        runtime=memo.runtime,
        policies=list(kwargs["policies_by_pool"].get((ns, name), [])),
    )
    _last_sample[str(meta.get("uid"))] = time.monotonic()


@kopf.timer(*POOLS, interval=MONITOR_TICK_SECONDS, initial_delay=MONITOR_TICK_SECONDS)
@contained(MONITOR_TICK_SECONDS)
def pool_monitor(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Every ``balancing.intervalSeconds``: sample (node table, conditions), then balance on that sample."""
    uid = str(meta.get("uid"))
    interval = float(dict(spec).get("balancing", {}).get("intervalSeconds", 30))
    if time.monotonic() - _last_sample.get(uid, 0.0) < interval - 0.5:
        return
    _last_sample[uid] = time.monotonic()
    ns = namespaced(namespace)
    policies = list(kwargs["policies_by_pool"].get((ns, name), []))
    sample = probe_pool(
        name=name,
        namespace=ns,
        spec=dict(spec),
        status=dict(status),
        generation=meta.get("generation"),
        body=body,
        patch=patch,
        runtime=memo.runtime,
        policies=policies,
    )
    if sample is not None:
        _balance_on(sample, (ns, name, uid), dict(status), body, patch, memo.runtime, policies)


def _balance_on(
    sample: tuple[ProxmoxServerPoolSpec, PveClient, ClusterSnapshot],
    identity: tuple[str, str, str],
    status: dict[str, Any],
    body: kopf.Body,
    patch: kopf.Patch,
    runtime: OperatorRuntime,
    policies: list[Any],
) -> None:
    """Balance the pool on the sample the monitor just took; Proxmox trouble or a missing ownership key is
    told (an event) and tried again next interval."""
    pool, client, snapshot = sample
    namespace, name, uid = identity
    try:
        balance_pool(
            name=name,
            namespace=namespace,
            uid=uid,
            pool=pool,
            status=status,
            body=body,
            patch=patch,
            runtime=runtime,
            policies=policies,
            client=client,
            snapshot=snapshot,
        )
    except PveError as exc:
        # The sample succeeded but balancing hit Proxmox trouble: say so, try again next interval.
        kopf.warn(body, reason="BalancingFailed", message=str(exc)[:1024])
    except ConfigurationError as exc:
        # No ownership key: nothing can be proven the operator's, so nothing is balanced.
        kopf.warn(body, reason=exc.reason, message=exc.message[:1024])


@kopf.on.delete(*POOLS, optional=True)
@contained(15)
def pool_deleted(name: str, namespace: str | None, meta: kopf.Meta, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A pool goes only after its policies: they need it to clean up their CTs."""
    ns = namespaced(namespace)
    users = sorted(str(p["name"]) for p in kwargs["policies_by_pool"].get((ns, name), []))
    if users:
        message = f"deletion waits for the ContainerPolicies that use this pool: {', '.join(users)}"
        kopf.warn(body, reason="DeletionBlocked", message=message)
        raise kopf.TemporaryError(message, delay=15)
    memo.runtime.forget_pool(ns, name)
    forget_pool_memory(ns, name)
    _last_sample.pop(str(meta.get("uid")), None)

"""The balancing planner's input for one pool: its spec and status, its policies, one snapshot.

Reads Proxmox VE (each candidate CT's config, once, through :mod:`pve_operator.execution.discovery`)
and nothing of Kubernetes: the callers pass what they read (the pool timer, and ``python -m
pve_operator plan``, which must not register Kopf handlers, so none of this lives in ``handlers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from pve_operator.api.v1alpha1 import (
    GROUP,
    ActionKind,
    AutomationMode,
    InFlightOperation,
    OffloadedContainer,
    PlacementSpec,
    ProxmoxServerPoolSpec,
)
from pve_operator.api.v1alpha1.common import format_epoch, parse_epoch
from pve_operator.execution.balancer import MIGRATION_TASKS, journaled_action
from pve_operator.execution.discovery import discover_owned
from pve_operator.execution.executor import PolicyIdentity
from pve_operator.planning.actions import BalanceAction
from pve_operator.planning.balancing import (
    PINNED_TAG,
    BalancingInput,
    BalancingLimits,
    InFlight,
    ManagedCT,
    PoolNodeSpec,
    PressureTrigger,
    Thresholds,
    with_stray_nodes,
)
from pve_operator.planning.balancing.inputs import migration_failures_from
from pve_operator.planning.balancing.restore import expected_usage
from pve_operator.planning.balancing.state import project
from pve_operator.planning.model import ClusterSnapshot, pool_measure
from pve_operator.planning.ownership import OFFLOADED_TAG, ForeignClaim, OwnershipKey, OwnershipRecord
from pve_operator.planning.topology import TopologyInputs, TopologyRules, pool_labels, rules_for
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import PveAuthenticationError, PveError, PvePermissionError, PveUnreachable
from pve_operator.pve.tasks import Upid

#: A policy annotation that pins all its CTs (never migrated or offloaded), like the pinned tag per CT.
PINNED_ANNOTATION = f"{GROUP}/pinned"


def policy_summary(name: str, uid: str, spec: Mapping[str, Any], annotations: Mapping[str, str]) -> dict[str, Any]:
    """What balancing needs of a ContainerPolicy (not its whole body)."""
    vmid_range = spec.get("vmidRange") or {}
    template = spec.get("template") or {}
    return {
        "name": name,
        "uid": uid,
        "pool": str(spec.get("poolRef", {}).get("name", "")),
        "priority": int(spec.get("priority", 100)),
        "start": int(vmid_range.get("start", 0)),
        "end": int(vmid_range.get("end", -1)),
        "paused": bool(spec.get("paused", False)),
        "pinned": str(annotations.get(PINNED_ANNOTATION, "")).lower() == "true",
        # placement.nodeWeights of 0: the policy's CTs never go there, by creation or by balancing.
        "excludedNodes": sorted(
            str(w.get("name")) for w in (spec.get("placement") or {}).get("nodeWeights") or () if not w.get("weight")
        ),
        # What the pool's sample checks PVE's rules for: SDN.Use on each bridge, the tags it may set.
        "bridges": sorted(
            {(str(n.get("bridge")), int(n["vlan"]) if n.get("vlan") else 0) for n in template.get("networks") or ()}
        ),
        "tags": sorted({str(t).lower() for t in template.get("tags") or ()}),
        # Spread and node affinity (with the node weights they count domains by), as the API server stored it.
        "placement": dict(spec.get("placement") or {}),
    }


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HaFacts:
    """What Proxmox VE's HA stack says about the cluster's CTs, read once per cycle."""

    #: vmid -> the HA rule naming it (node-affinity, resource-affinity, or an HA group as ``ha-group-*``).
    rule_of: Mapping[int, str]
    #: datacenter.cfg ``crs: ha-auto-rebalance=1``: PVE's CRS rebalances HA resources itself.
    auto_rebalance: bool


def read_ha_facts(client: PveClient, snapshot: ClusterSnapshot) -> HaFacts:
    """The HA rules and the CRS auto-rebalance setting, read only when a CT of the cluster is HA-managed.
    Unreadable (no ``Sys.Audit`` on ``/``): no rules known and auto-rebalance off, which the pool's
    permission check reports; the HA-managed CTs are then still handled safely (their requests waited for)."""
    if not any(ct.ha_managed for ct in snapshot.containers.values()):
        return HaFacts({}, False)
    rule_of: dict[int, str] = {}
    try:
        for rule in client.ha_rules():
            for sid in str(rule.get("resources") or "").split(","):
                kind, _, vmid = sid.strip().partition(":")
                if kind == "ct" and vmid.isdigit():
                    rule_of.setdefault(int(vmid), str(rule.get("rule") or "?"))
    except PvePermissionError:
        pass
    except (PveUnreachable, PveAuthenticationError):
        raise
    except PveError:
        # PVE 8 has no HA rules (pve-ha-manager 5.0 turned HA groups into rules): its groups place CTs.
        try:
            for resource in client.ha_resources():
                kind, _, vmid = str(resource.get("sid") or "").partition(":")
                if kind == "ct" and vmid.isdigit() and resource.get("group"):
                    rule_of.setdefault(int(vmid), f"ha-group-{resource['group']}")
        except PvePermissionError:
            pass
    try:
        crs = client.cluster_options().get("crs") or {}
    except PvePermissionError:
        crs = {}
    if isinstance(crs, str):  # a property string, as datacenter.cfg writes it
        crs = dict(part.partition("=")[::2] for part in crs.split(",") if part)
    auto = str(crs.get("ha-auto-rebalance", "0")).strip() in ("1", "true", "yes", "on")
    return HaFacts(rule_of, auto)


def _topology(
    policy: Mapping[str, Any], pool: ProxmoxServerPoolSpec, snapshot: ClusterSnapshot
) -> TopologyRules | None:
    """The policy's placement rules over the pool, or None when it has none. A placement the model
    refuses (only an API server without the CRD's validation would store one) counts as no rules: the
    policy's own cycle reports it."""
    try:
        placement = PlacementSpec.model_validate(policy.get("placement") or {})
    except ValidationError:
        return None
    if not placement.topology_spread_constraints and placement.node_affinity is None:
        return None
    online = frozenset(name for name, node in snapshot.nodes.items() if node.online)
    return rules_for(placement, pool_labels(pool), TopologyInputs(placement.effective_node_weights(pool), online))


@dataclass(frozen=True)
class CollectedInput:
    """The planner's input plus who owns each CT (for the executor and the reports)."""

    input: BalancingInput
    owners: Mapping[int, PolicyIdentity]
    policy_of: Mapping[int, Mapping[str, Any]]
    locked: frozenset[int]


def collect_input(
    *,
    namespace: str,
    pool: ProxmoxServerPoolSpec,
    status: Mapping[str, Any],
    records_for: Callable[[str], dict[int, OwnershipRecord | ForeignClaim | None]],
    ownership_key: OwnershipKey,
    policies: Sequence[Mapping[str, Any]],
    client: PveClient,
    snapshot: ClusterSnapshot,
    history: Mapping[str, Sequence[float]],
    last_action_at: dict[int, float],
    now: float,
) -> CollectedInput:
    """Everything the planner needs for one pool, from its spec and status, its policies and one snapshot.

    ``records_for(policy_uid)`` is the per-policy cache of ownership verdicts (the runtime's, or a fresh
    dict for a one-off ``plan``); ``last_action_at`` is updated with the actions ``status`` records."""
    thresholds = pool.thresholds
    metric = pool_measure(thresholds)
    offloaded_usage = {o.vmid: o for o in read_offloaded(status.get("offloaded"))}
    for entry in status.get("recentActions") or []:
        if entry.get("action") in ("Migrate", "Offload", "Restore") and entry.get("result") in (
            "Succeeded",
            "InProgress",
        ):
            when = parse_epoch(entry.get("time"))
            if when is not None and entry.get("vmid") is not None:
                vmid = int(entry["vmid"])
                last_action_at[vmid] = max(last_action_at.get(vmid, 0.0), when)
    failures = migration_failures_from(
        (int(e["vmid"]), str(e.get("action")), str(e.get("result")), when, str(e.get("message") or ""))
        for e in status.get("recentActions") or []
        if e.get("vmid") is not None and (when := parse_epoch(e.get("time"))) is not None
    )
    managed: dict[int, ManagedCT] = {}
    owners: dict[int, PolicyIdentity] = {}
    policy_of: dict[int, Mapping[str, Any]] = {}
    topology: dict[str, TopologyRules] = {}
    ha = read_ha_facts(client, snapshot)
    for policy in policies:
        rules = _topology(policy, pool, snapshot)
        if rules is not None:
            topology[str(policy["name"])] = rules
        vmid_range = range(int(policy["start"]), int(policy["end"]) + 1)
        for item in discover_owned(
            client,
            snapshot,
            str(policy["uid"]),
            vmid_range,
            records_for(str(policy["uid"])),
            key=ownership_key,
        ):
            obs = item.observation
            if obs is None or not item.verified:
                continue  # gone, or on an offline node: nothing to balance
            owners[item.vmid] = PolicyIdentity(
                namespace, str(policy["name"]), str(policy["uid"]), vmid_range, ownership_key
            )
            policy_of[item.vmid] = policy
            if policy["paused"]:
                continue
            restore = offloaded_usage.get(item.vmid)
            managed[item.vmid] = ManagedCT(
                vmid=item.vmid,
                policy=str(policy["name"]),
                priority=int(policy["priority"]),
                created_at=item.created_at,
                pinned=bool(policy["pinned"]) or PINNED_TAG in obs.tags,
                offloaded=OFFLOADED_TAG in obs.tags,
                last_action_at=last_action_at.get(item.vmid),
                restore_memory_bytes=restore.memory_used_bytes if restore else None,
                restore_cpu_fraction=restore.cpu_used_fraction if restore else None,
                excluded_nodes=frozenset(policy.get("excludedNodes") or ()),
                migration_failures=failures.get(item.vmid),
                ha_rule=ha.rule_of.get(item.vmid),
            )

    locked = frozenset(vmid for vmid, ct in snapshot.containers.items() if ct.lock)
    balancing_mode = pool.balancing.mode
    offload_mode = pool.offload.mode
    inp = BalancingInput(
        snapshot=snapshot,
        # CTs of ours on a node outside the pool (moved there by hand) are brought back like a drain.
        pool_nodes=with_stray_nodes(
            tuple(PoolNodeSpec(n.name, n.weight, n.maintenance) for n in pool.nodes), snapshot, managed
        ),
        managed=managed,
        history={k: tuple(v) for k, v in history.items()},
        now=now,
        thresholds=Thresholds.from_percent(
            metric=metric,
            migrate_above_percent=thresholds.migrate_above_percent,
            offload_above_percent=thresholds.offload_above_percent,
            restore_below_percent=thresholds.restore_below_percent,
            sustained_samples=thresholds.sustained_samples,
            pressure=PressureTrigger.from_spec(thresholds.pressure),
        ),
        limits=BalancingLimits.from_percent(
            max_concurrent_migrations=pool.balancing.max_concurrent_migrations,
            cooldown_seconds=pool.balancing.cooldown_seconds,
            min_improvement_percent=pool.balancing.min_improvement_percent,
            objective=pool.balancing.objective.value,
            min_gain_percent=pool.balancing.min_gain_percent,
            level_tolerance_percent=pool.balancing.level_tolerance_percent,
        ),
        in_flight=InFlight(other_vmids=frozenset(locked)),
        balancing_enabled=balancing_mode is not AutomationMode.OFF,
        offload_enabled=offload_mode is not AutomationMode.OFF,
        topology=topology,
        ha_auto_rebalance=ha.auto_rebalance,
    )
    return CollectedInput(inp, owners, policy_of, locked)


def read_in_flight(raw: Any) -> list[InFlightOperation]:
    """``status.inFlight`` as typed entries; the fields older versions did not write get defaults. An entry
    that cannot be read fails the cycle (``ValidationError`` names the field): it is never dropped silently,
    as it may stand for a CT the operator stopped for a migration."""
    entries = []
    for item in raw or ():
        data = dict(item)
        data.setdefault("startedAt", format_epoch(0))
        data.setdefault("sourceNode", "")
        entries.append(InFlightOperation.model_validate(data))
    return entries


def read_offloaded(raw: Any) -> list[OffloadedContainer]:
    """``status.offloaded`` as typed entries; an entry that does not validate is skipped with a log line
    (it only sizes a restore: the CT's offloaded tag in PVE is what marks it offloaded)."""
    entries = []
    for item in raw or ():
        try:
            entries.append(OffloadedContainer.model_validate(item))
        except ValidationError as exc:
            log.warning("status.offloaded entry %s ignored: %s", item, exc)
    return entries


def project_in_flight(inp: BalancingInput, entries: Sequence[InFlightOperation]) -> BalancingInput:
    """The planner's input with the journaled actions still in flight (``status.inFlight`` entries with a task)
    planned as done: PVE's figures lag behind a migration, a shutdown, a start, and planning against the lag
    would relieve the same overload twice (offload a second CT for it, restore two CTs onto the same room).
    Their CTs are left alone, and migrations (a restore's copy too) count against the targets' inbound limit."""
    still = [e for e in entries if e.upid]
    if not still:
        return inp
    moving_to = {e.vmid: str(e.target_node) for e in still if _moves(e)}
    return replace(
        inp,
        snapshot=project(inp.snapshot, [a for e in still if (a := _projected(e, inp)) is not None]),
        in_flight=InFlight(
            migrations=moving_to,
            other_vmids=(inp.in_flight.other_vmids | {e.vmid for e in still}) - set(moving_to),
        ),
    )


def _moves(entry: InFlightOperation) -> bool:
    """A migration, or a restore still moving its CT (its task the migration, not yet the start)."""
    if entry.action is ActionKind.MIGRATE:
        return True
    moving = entry.action is ActionKind.RESTORE and bool(entry.target_node) and entry.target_node != entry.source_node
    return moving and entry.upid is not None and Upid.parse(entry.upid).type in MIGRATION_TASKS


def _projected(entry: InFlightOperation, inp: BalancingInput) -> BalanceAction | None:
    """An action still in flight, as the planner projects it: a restore adds what the planner expects its CT
    to use once started (None when the CT is no longer ours or gone: nothing to project)."""
    if entry.action is not ActionKind.RESTORE:
        return journaled_action(entry)
    ct, managed = inp.snapshot.containers.get(entry.vmid), inp.managed.get(entry.vmid)
    if ct is None or managed is None:
        return None
    memory, cpu = expected_usage(ct, managed)
    return journaled_action(entry, expected_memory_used_bytes=memory, expected_cpu_used_fraction=cpu)

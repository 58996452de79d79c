"""Balancing scenarios as YAML files (tests/scenarios/balancing/*.yaml): schema, loader, runner.

A scenario lists nodes (capacity, usage in percent, sample history in percent), CTs (ours or foreign,
with their usage and the operator's facts about them), settings in the CRD's units, operations in
flight, and what the plan must contain. Node usage given in percent is split into the listed CTs plus
a remainder (host and anything unlisted), so moving a CT moves exactly its share. The schema forbids
unknown keys, so a typo in a scenario fails instead of silently meaning nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pve_operator.api.v1alpha1 import PlacementSpec
from pve_operator.planning.actions import BalanceAction
from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    InFlight,
    ManagedCT,
    PoolNodeSpec,
    Refusal,
    Thresholds,
    get_strategy,
    plan_balance,
    with_stray_nodes,
)
from pve_operator.planning.balancing.strategy import snake_case
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, ContainerStatus, Metric, NodeUsage
from pve_operator.planning.topology import HOSTNAME_LABEL, TopologyInputs, TopologyRules, rules_for

GIB = 1024**3
SCENARIO_DIR = Path(__file__).resolve().parents[3] / "scenarios" / "balancing"


def _alias(name: str) -> str:
    """camelCase as the CRD writes it, with the unit spelled GiB: ``memory_used_gib -> memoryUsedGiB``."""
    return to_camel(name).replace("Gib", "GiB")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=_alias, populate_by_name=True, frozen=True)


class NodeSpec(_Model):
    name: str
    memory_gib: float = 32
    #: Memory in use, percent of memory_gib; default: 1 GiB of host use plus the listed running CTs.
    memory_percent: float | None = None
    cores: float = 8
    cpu_percent: float | None = None
    disk_gib: float = 400
    disk_percent: float | None = None
    online: bool = True
    in_pool: bool = True
    maintenance: bool = False
    weight: int = 1
    #: Topology labels (ProxmoxServerPool nodes[].labels); kubernetes.io/hostname is implicit.
    labels: dict[str, str] = Field(default_factory=dict)
    #: Samples of the pool's metric in percent, oldest first; default: the current figure, sustainedSamples times.
    history: list[float] | None = None


class CTSpec(_Model):
    vmid: int
    node: str
    memory_used_gib: float = 1
    memory_gib: float = 4
    cores: float = 1
    #: CPU use in percent of the CT's own cores.
    cpu_percent: float = 10
    disk_used_gib: float = 2
    disk_gib: float = 8
    status: Literal["running", "stopped", "unknown"] = "running"
    lock: str | None = None
    foreign: bool = False
    policy: str = "web"
    priority: int = 100
    created: str = "2026-01-01T00:00:00Z"
    pinned: bool = False
    offloaded: bool = False
    #: Nodes the CT's policy gives weight 0 in placement.nodeWeights.
    excluded_nodes: list[str] = Field(default_factory=list)
    last_action_seconds_ago: float | None = None
    #: Usage expected on restore; default for an offloaded CT: memoryUsedGiB (what it used when stopped).
    restore_memory_gib: float | None = None
    restore_cpu_percent: float | None = None
    #: ``hastate`` in /cluster/resources: the CT is an HA resource of PVE (e.g. started).
    ha_state: str | None = None
    #: The PVE HA rule that names the CT (node or resource affinity).
    ha_rule: str | None = None


class InFlightSpec(_Model):
    migrations: dict[int, str] = Field(default_factory=dict)
    busy: list[int] = Field(default_factory=list)


class Expect(_Model):
    #: The plan's actions in order; each entry lists the fields to compare (kind, vmid, node, target, ...).
    actions: list[dict[str, Any]] = Field(default_factory=list)
    #: Substrings each action's reason must contain, aligned with ``actions``.
    reasons: list[list[str]] = Field(default_factory=list)
    #: Refusals that must be present (fields to compare; ``reasonContains`` matches a substring).
    refusals: list[dict[str, Any]] = Field(default_factory=list)
    #: The plan has exactly as many refusals as listed (e.g. none in a quiet scenario).
    only_these_refusals: bool = False


class Scenario(_Model):
    name: str
    description: str
    #: Run one strategy's ``propose`` instead of ``plan_balance``.
    strategy: str | None = None
    now: float = 1_000_000
    thresholds: dict[str, Any] = Field(default_factory=dict)
    balancing: dict[str, Any] = Field(default_factory=dict)
    balancing_enabled: bool = True
    offload_enabled: bool = True
    nodes: list[NodeSpec]
    cts: list[CTSpec] = Field(default_factory=list)
    in_flight: InFlightSpec = Field(default_factory=InFlightSpec)
    #: datacenter.cfg crs: ha-auto-rebalance=1 (PVE balances its HA resources itself).
    ha_auto_rebalance: bool = False
    #: Policy name -> its spec.placement as in the CRD (topologySpreadConstraints, nodeAffinity).
    placements: dict[str, dict[str, Any]] = Field(default_factory=dict)
    expect: Expect


def load(path: Path) -> Scenario:
    return Scenario.model_validate(yaml.safe_load(path.read_text()))


def scenario_paths() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.yaml"))


def _thresholds(raw: Mapping[str, Any]) -> Thresholds:
    return Thresholds.from_percent(
        metric=Metric(raw.get("metric", "memory")),
        migrate_above_percent=raw.get("migrateAbovePercent", 75),
        offload_above_percent=raw.get("offloadAbovePercent", 90),
        restore_below_percent=raw.get("restoreBelowPercent", 60),
        sustained_samples=raw.get("sustainedSamples", 3),
    )


def _limits(raw: Mapping[str, Any]) -> BalancingLimits:
    return BalancingLimits.from_percent(
        max_concurrent_migrations=raw.get("maxConcurrentMigrations", 1),
        cooldown_seconds=raw.get("cooldownSeconds", 1800),
        min_improvement_percent=raw.get("minImprovementPercent", 10),
        max_inbound_per_target=raw.get("maxInboundPerTarget", 1),
    )


def _observation(ct: CTSpec) -> ContainerObservation:
    running = ct.status == "running"
    return ContainerObservation(
        vmid=ct.vmid,
        node=ct.node,
        status=ContainerStatus(ct.status),
        name=f"ct{ct.vmid}",
        lock=ct.lock,
        cpu_cores=ct.cores,
        cpu_used_fraction=ct.cpu_percent / 100 if running else 0.0,
        memory_limit_bytes=int(ct.memory_gib * GIB),
        memory_used_bytes=int(ct.memory_used_gib * GIB) if running else 0,
        disk_limit_bytes=int(ct.disk_gib * GIB),
        disk_used_bytes=int(ct.disk_used_gib * GIB),
        ha_state=ct.ha_state,
    )


def _node(spec: NodeSpec, cts: Sequence[ContainerObservation]) -> NodeUsage:
    here = [c for c in cts if c.node == spec.name]
    memory_total = int(spec.memory_gib * GIB)
    cts_memory = sum(c.memory_used_bytes for c in here)
    cts_cores = sum(c.cpu_used_fraction * c.cpu_cores for c in here)
    cts_disk = sum(c.disk_used_bytes for c in here)
    memory = int(spec.memory_percent / 100 * memory_total) if spec.memory_percent is not None else GIB + cts_memory
    cores = spec.cpu_percent / 100 * spec.cores if spec.cpu_percent is not None else 0.2 + cts_cores
    disk_total = int(spec.disk_gib * GIB)
    disk = int(spec.disk_percent / 100 * disk_total) if spec.disk_percent is not None else 10 * GIB + cts_disk
    for what, total, listed in (("memory", memory, cts_memory), ("cpu", cores, cts_cores), ("disk", disk, cts_disk)):
        if total < listed - 1e-6:
            raise ValueError(f"node {spec.name}: its {what} use is less than its CTs' ({total} < {listed})")
    return NodeUsage(
        name=spec.name,
        online=spec.online,
        cpu_cores=spec.cores,
        cpu_used_fraction=cores / spec.cores,
        memory_total_bytes=memory_total,
        memory_used_bytes=memory,
        disk_total_bytes=disk_total,
        disk_used_bytes=disk,
    )


def build_input(scenario: Scenario, *, reverse: bool = False) -> BalancingInput:
    """The planner input. ``reverse`` lists CTs and our facts in the opposite order (same content)."""
    thresholds = _thresholds(scenario.thresholds)
    ordered = list(reversed(scenario.cts)) if reverse else list(scenario.cts)
    observations = [_observation(ct) for ct in ordered]
    nodes = [_node(spec, observations) for spec in scenario.nodes]
    snapshot = ClusterSnapshot.of(scenario.now, nodes, observations)
    history = {
        spec.name: [p / 100 for p in spec.history]
        if spec.history is not None
        else [usage.used_fraction(thresholds.metric)] * thresholds.sustained_samples
        for spec, usage in zip(scenario.nodes, nodes, strict=True)
    }
    managed = {
        ct.vmid: ManagedCT(
            vmid=ct.vmid,
            policy=ct.policy,
            priority=ct.priority,
            created_at=ct.created,
            pinned=ct.pinned,
            offloaded=ct.offloaded,
            excluded_nodes=frozenset(ct.excluded_nodes),
            last_action_at=None if ct.last_action_seconds_ago is None else scenario.now - ct.last_action_seconds_ago,
            restore_memory_bytes=(
                int(ct.restore_memory_gib * GIB)
                if ct.restore_memory_gib is not None
                else int(ct.memory_used_gib * GIB)
                if ct.offloaded
                else None
            ),
            restore_cpu_fraction=ct.restore_cpu_percent / 100 if ct.restore_cpu_percent is not None else None,
            ha_rule=ct.ha_rule,
        )
        for ct in ordered
        if not ct.foreign
    }
    return BalancingInput(
        snapshot=snapshot,
        # As the operator builds it: CTs of ours on a node outside the pool make it a drain source.
        pool_nodes=with_stray_nodes(
            tuple(
                PoolNodeSpec(spec.name, weight=spec.weight, maintenance=spec.maintenance)
                for spec in scenario.nodes
                if spec.in_pool
            ),
            snapshot,
            managed,
        ),
        managed=managed,
        history=history,
        now=scenario.now,
        thresholds=thresholds,
        limits=_limits(scenario.balancing),
        in_flight=InFlight(
            migrations=MappingProxyType(dict(scenario.in_flight.migrations)),
            other_vmids=frozenset(scenario.in_flight.busy),
        ),
        balancing_enabled=scenario.balancing_enabled,
        offload_enabled=scenario.offload_enabled,
        topology=_topology(scenario),
        ha_auto_rebalance=scenario.ha_auto_rebalance,
    )


def _topology(scenario: Scenario) -> dict[str, TopologyRules]:
    """Each policy's rules as the operator builds them (``rules_for``) from the scenario's pool nodes."""
    in_pool = [spec for spec in scenario.nodes if spec.in_pool]
    labels = {spec.name: {**spec.labels, HOSTNAME_LABEL: spec.name} for spec in in_pool}
    weights = {spec.name: 0 if spec.maintenance else spec.weight for spec in in_pool}
    online = frozenset(spec.name for spec in in_pool if spec.online)
    return {
        name: rules_for(PlacementSpec.model_validate(raw), labels, TopologyInputs(weights, online))
        for name, raw in scenario.placements.items()
    }


@dataclass(frozen=True)
class Outcome:
    actions: tuple[BalanceAction, ...]
    refusals: tuple[Refusal, ...]


def run(scenario: Scenario, *, reverse: bool = False) -> Outcome:
    inp = build_input(scenario, reverse=reverse)
    if scenario.strategy is not None:
        proposal = get_strategy(scenario.strategy).propose(inp)
        return Outcome(proposal.actions, proposal.refusals)
    plan = plan_balance(inp)
    return Outcome(plan.actions, plan.refusals)


def matches(item: object, expected: Mapping[str, Any]) -> bool:
    """Whether ``item`` (an action or a refusal) has every field ``expected`` lists (camelCase keys;
    ``reasonContains`` is a substring of the reason; percent figures match to 0.01)."""
    for key, value in expected.items():
        if key == "reasonContains":
            if value not in str(getattr(item, "reason")):  # noqa: B009
                return False
            continue
        actual = getattr(item, snake_case(key))
        if hasattr(actual, "value"):
            actual = actual.value
        if isinstance(value, float) and not isinstance(actual, bool):
            if abs(float(actual) - value) > 0.011:
                return False
        elif actual != value:
            return False
    return True

"""Weighted placement of new CTs over a pool's nodes, under the creation ceiling.

Two strategies, both pure:

* ``WeightedSpread`` (default, deterministic): each new CT goes to the eligible node with the lowest
  ``count / weight``; ties go to the higher weight, then the node name. At weights 2:1 nine CTs land
  exactly 6 and 3, and any prefix of the sequence is as close to 2:1 as integers allow.
* ``WeightedRandom``: the lab's ``random.choices(nodes, weights)`` draw, seeded per CT (policy seed +
  CT index) so a retried reconcile makes the same choice instead of a new one.

A node is eligible when it is online, not in maintenance, has a positive weight, and stays at or
under the creation ceiling after the new CT is counted at its configured size (memory limit,
cores, rootfs size). Counting the limit rather than the expected use is deliberately conservative:
a CT may grow to its limit, and the ceiling exists so that it can.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pve_operator.planning.model import NodeUsage, UsageMeasure
from pve_operator.planning.topology import TopologyRules

MIB = 1024 * 1024
GIB = 1024 * MIB


class PlacementStrategy(StrEnum):
    WEIGHTED_SPREAD = "WeightedSpread"
    WEIGHTED_RANDOM = "WeightedRandom"


@dataclass(frozen=True)
class ContainerDemand:
    """The most a new CT can take from its node: its configured size."""

    memory_bytes: int
    cpu_cores: float
    disk_bytes: int


@dataclass(frozen=True)
class NodeCandidate:
    """A node of the pool as placement sees it."""

    usage: NodeUsage
    weight: int
    #: CTs of this policy already on the node (spread counts only the policy's own CTs).
    managed_count: int = 0
    maintenance: bool = False

    @property
    def name(self) -> str:
        return self.usage.name


def with_demand(node: NodeUsage, demand: ContainerDemand) -> NodeUsage:
    """The node's usage after a CT of ``demand`` is added to it (projected, not measured)."""
    extra_cpu = demand.cpu_cores / node.cpu_cores if node.cpu_cores > 0 else 1.0
    return replace(
        node,
        cpu_used_fraction=node.cpu_used_fraction + extra_cpu,
        memory_used_bytes=node.memory_used_bytes + demand.memory_bytes,
        disk_used_bytes=node.disk_used_bytes + demand.disk_bytes,
    )


@dataclass(frozen=True)
class PlacementResult:
    """Where each requested CT goes, in request order; CTs that fit nowhere are not placed."""

    nodes: list[str]
    #: For every node that was not eligible at the end: a short reason users can read.
    refusals: Mapping[str, str] = field(default_factory=dict)
    #: Nodes with room that the policy's placement rules (spread, node affinity) refused at the end.
    rule_refused: frozenset[str] = frozenset()

    @property
    def placed(self) -> int:
        return len(self.nodes)


def _refusal(candidate: NodeCandidate, demand: ContainerDemand, metric: UsageMeasure, ceiling: float) -> str | None:
    if not candidate.usage.online:
        return "offline"
    if candidate.maintenance:
        return "in maintenance"
    if candidate.weight <= 0:
        return "weight 0"
    # Sizes no load can make fit, whatever the pool's metric: say so with the figures, never try.
    usage = candidate.usage
    if usage.cpu_cores and demand.cpu_cores > usage.cpu_cores:
        return f"template.cores {demand.cpu_cores:g} > the node's {usage.cpu_cores:g} cores"
    if usage.memory_total_bytes and demand.memory_bytes > usage.memory_total_bytes:
        return f"template.memoryMiB {demand.memory_bytes // MIB} > the node's {usage.memory_total_bytes // MIB} MiB"
    if usage.disk_total_bytes and demand.disk_bytes > usage.disk_total_bytes:
        # Larger than the whole storage (thin pools may overcommit free space, never their size).
        total_gib = usage.disk_total_bytes / GIB
        return f"rootfs {demand.disk_bytes / GIB:g} GiB > the node's CT storage of {total_gib:.0f} GiB"
    projected = with_demand(candidate.usage, demand).used_fraction(metric)
    if projected > ceiling + 1e-9:
        now = candidate.usage.used_fraction(metric)
        return f"{metric.value} {now:.0%} now, {projected:.0%} with one more CT > ceiling {ceiling:.0%}"
    return None


def place(
    indices: Sequence[int],
    candidates: Sequence[NodeCandidate],
    demand: ContainerDemand,
    *,
    metric: UsageMeasure,
    ceiling_fraction: float,
    strategy: PlacementStrategy = PlacementStrategy.WEIGHTED_SPREAD,
    seed: str = "",
    rules: TopologyRules | None = None,
) -> PlacementResult:
    """Choose a node for each new CT (identified by its policy index), one at a time.

    Each choice is counted before the next is made, so a batch never overshoots the ceiling, the weights
    or the policy's ``rules``. With rules, a node must also pass the required node affinity and every
    DoNotSchedule spread constraint; among those, the fewest ScheduleAnyway excess and then the highest
    preferred-affinity weight come before the strategy's own choice. Placement stops at the first CT that
    fits nowhere: the rest would not fit either.
    """
    state = {c.name: c for c in candidates}
    counts = {c.name: c.managed_count for c in candidates}

    def rule_refusal(name: str) -> str | None:
        return rules.add_refusal(counts, name) if rules is not None and rules.constrained else None

    chosen: list[str] = []
    for index in indices:
        eligible = [
            c
            for c in state.values()
            if _refusal(c, demand, metric, ceiling_fraction) is None and rule_refusal(c.name) is None
        ]
        if not eligible:
            break
        if rules is not None and rules.constrained:
            # Soft rules first: keep only the candidates they like best, then the strategy decides.
            ranks = {c.name: (rules.soft_penalty(counts, c.name), -rules.preference(c.name)) for c in eligible}
            best = min(ranks.values())
            eligible = [c for c in eligible if ranks[c.name] == best]
        if strategy is PlacementStrategy.WEIGHTED_RANDOM:
            ordered = sorted(eligible, key=lambda c: c.name)
            rng = random.Random(f"{seed}:{index}")
            target = rng.choices(ordered, weights=[c.weight for c in ordered])[0]
        else:
            target = min(eligible, key=lambda c: (c.managed_count / c.weight, -c.weight, c.name))
        chosen.append(target.name)
        counts[target.name] += 1
        state[target.name] = replace(
            target, usage=with_demand(target.usage, demand), managed_count=target.managed_count + 1
        )
    refusals: dict[str, str] = {}
    rule_refused: set[str] = set()
    for name, c in state.items():
        reason = _refusal(c, demand, metric, ceiling_fraction)
        if reason is None:
            reason = rule_refusal(name)
            if reason is not None:
                rule_refused.add(name)
        if reason is not None:
            refusals[name] = reason
    return PlacementResult(nodes=chosen, refusals=refusals, rule_refused=frozenset(rule_refused))


def allocate_vmids(
    indices: Sequence[int],
    vmid_range: range,
    used: frozenset[int] | set[int],
    reserved: frozenset[int] = frozenset(),
) -> dict[int, int]:
    """A VMID for each CT index: ``range.start + index`` when that id is free (the lab's convention,
    so ct-web-07 is 3107), else the *highest* free id of the range that no index asks for now.

    ``used`` must hold every VMID in the cluster, ours and foreign, CTs and VMs: PVE VMIDs are
    cluster-wide, and an id in use by anything else is skipped, never taken over. ``reserved`` are ids
    no new CT may take (the part of the range another policy's range overlaps). A displaced index
    takes its id from the top of the range, because the indices a policy grows into next are the low
    ones: taking from the bottom would push the next CT off its own ``start + index`` too. Indices
    that get no id (the range is full) are missing from the result.
    """
    taken = set(used) | set(reserved)
    preferred = {vmid_range.start + i for i in indices}
    result: dict[int, int] = {}
    fallback: list[int] = []
    for index in indices:
        vmid = vmid_range.start + index
        if vmid in vmid_range and vmid not in taken:
            result[index] = vmid
            taken.add(vmid)
        else:
            fallback.append(index)
    free = (v for v in reversed(vmid_range) if v not in taken and v not in preferred)
    for index in fallback:
        spare = next(free, None)
        if spare is None:
            break
        result[index] = spare
        taken.add(spare)
    return result

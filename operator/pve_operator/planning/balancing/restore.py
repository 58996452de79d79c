"""``restore``: start offloaded CTs again where there is room under ``restoreBelowPercent``.

* Order: the reverse of the offload order, i.e. highest policy priority first and, within a priority,
  the newest CT first (offload stops the oldest first, so the CTs it would stop last come back first).
  A CT that fits nowhere is reported and skipped; smaller ones after it may still fit.
* A node can receive when it is a pool node, online, not in maintenance, its last ``sustainedSamples``
  samples are all at or under the restore threshold, and its projected use *with the CT's expected
  usage* stays at or under it. The expected usage is what the CT used when it was offloaded (else its
  memory limit and all its cores), so a restore never lands a node in the band that would make
  rebalance or offload act again (``restoreBelow < migrateAbove < offloadAbove``).
* The CT's own node is preferred: starting it there costs nothing extra. Otherwise (and unless the CT is
  pinned) it is migrated, stopped, to the coolest node that can receive it and started there; a stopped
  migration copies only the volumes. Such a restore counts as a migration for the limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, RestoreContainer
from pve_operator.planning.balancing.eligibility import blocked, ha_placed, receiving_nodes, refusal
from pve_operator.planning.balancing.inputs import BalancingInput, ManagedCT
from pve_operator.planning.balancing.proposal import Proposal, Refusal, RefusalKind
from pve_operator.planning.balancing.spread import target_rank, target_refusal
from pve_operator.planning.balancing.state import (
    GIB,
    Load,
    NodeState,
    WorkingState,
    at_or_below,
    pct,
    percent,
    restored_load,
    sustained_at_or_below,
    threshold_figure,
)
from pve_operator.planning.balancing.strategy import Strategy
from pve_operator.planning.model import ContainerObservation


@dataclass(frozen=True)
class RestoreArgs:
    """Options of the restore strategy."""

    #: Restore onto another node when the CT's own node has no room (off: only ever in place).
    allow_migration: bool = True


def expected_usage(ct: ContainerObservation, managed: ManagedCT) -> tuple[int, float]:
    """Memory bytes and CPU fraction (of its own cores) the CT is expected to use once started."""
    memory = managed.restore_memory_bytes if managed.restore_memory_bytes is not None else ct.memory_limit_bytes
    cpu = managed.restore_cpu_fraction if managed.restore_cpu_fraction is not None else 1.0
    return memory, cpu


def propose(inp: BalancingInput, args: RestoreArgs) -> Proposal:
    """Restores in reverse offload order, in place when possible."""
    metric = inp.thresholds.metric
    limit = inp.thresholds.restore_below_fraction
    samples_needed = inp.thresholds.sustained_samples
    state = WorkingState(inp.snapshot, metric)
    order = {spec.name: i for i, spec in enumerate(inp.pool_nodes)}
    targets = receiving_nodes(inp, state)

    def calm(name: str) -> bool:
        spec = inp.pool_node(name)
        node = state.nodes.get(name)
        return (
            spec is not None
            and not spec.maintenance
            and node is not None
            and node.online
            and node.capacity_known
            and sustained_at_or_below(inp.history.get(name), samples_needed, limit)
            and at_or_below(node.fraction(metric), limit)
        )

    def room(node: NodeState, load: Load) -> bool:
        return node.fits(load) and at_or_below(node.fraction(metric, load), limit)

    candidates: list[tuple[int, str, int]] = []
    refusals: list[Refusal] = []
    for vmid in sorted(inp.managed):
        managed = inp.managed[vmid]
        ct = inp.snapshot.containers.get(vmid)
        if ct is None or not managed.offloaded or ct.running or ct.template or vmid in inp.in_flight.planned_vmids:
            continue
        why = blocked(inp, ct, managed, pin=False)
        if why is not None:
            refusals.append(refusal("Restore", why, vmid, ct.node))
            continue
        candidates.append((managed.priority, managed.created_at, vmid))
    candidates.sort(reverse=True)

    actions: list[BalanceAction] = []
    for _, _, vmid in candidates:
        ct = inp.snapshot.containers[vmid]
        managed = inp.managed[vmid]
        memory, cpu = expected_usage(ct, managed)
        start_load = restored_load(ct, memory, cpu)
        home = state.location[vmid]
        home_node = state.nodes.get(home)
        target: str | None = None
        if home_node is not None and calm(home) and room(home_node, start_load):
            target = home
        elif args.allow_migration and not managed.pinned and ha_placed(inp, ct, managed) is None:
            moving = Load(start_load.cpu_cores, start_load.memory_bytes, state.load[vmid].disk_bytes)
            best: tuple[int, int, float, int, str] | None = None
            for name in targets:
                node = state.nodes[name]
                if name == home or not calm(name) or not room(node, moving):
                    continue
                if target_refusal(inp, state, vmid, name) is not None:
                    continue
                key = (*target_rank(inp, state, vmid, name), node.fraction(metric, moving), order[name], name)
                if best is None or key < best:
                    best = key
            target = best[4] if best is not None else None
        if target is None:
            where = "its node has" if managed.pinned or not args.allow_migration else "no node has"
            refusals.append(
                Refusal(
                    kind=RefusalKind.NO_TARGET,
                    stage="Restore",
                    vmid=vmid,
                    node=home,
                    reason=(
                        f"CT {vmid} stays offloaded: {where} stayed at or under restoreBelowPercent "
                        f"{threshold_figure(limit)} for {samples_needed} samples with room for its "
                        f"{memory / GIB:.1f} GiB"
                    ),
                )
            )
            continue
        home_before = state.fraction(home)
        target_before = state.fraction(target)
        if target != home:
            state.move(vmid, target)
        state.start(vmid, start_load)
        home_after = state.fraction(home)
        target_after = state.fraction(target)
        where_text = (
            f"start on {target}"
            if target == home
            else f"migrate from {home} ({metric.value} {pct(home_before)}, no room) and start on {target}"
        )
        actions.append(
            RestoreContainer(
                vmid=vmid,
                node=home,
                target=target,
                reason=(
                    f"CT {vmid} offloaded (policy {managed.policy}, priority {managed.priority}); {target} "
                    f"{metric.value} at or under restoreBelowPercent {threshold_figure(limit)} for {samples_needed} "
                    f"samples: {where_text}: {target} {pct(target_before)} → {pct(target_after)}"
                ),
                expected_memory_used_bytes=memory,
                expected_cpu_used_fraction=cpu,
                source_percent_before=percent(home_before),
                source_percent_after=percent(home_after),
                target_percent_before=percent(target_before),
                target_percent_after=percent(target_after),
            )
        )
    return Proposal(actions=tuple(actions), refusals=tuple(refusals))


STRATEGY = Strategy(
    name="restore",
    stage="Restore",
    args_type=RestoreArgs,
    propose_fn=propose,
    description="Start offloaded CTs again, highest priority and newest first, where the node stays under "
    "restoreBelowPercent with them.",
)

"""A ContainerPolicy's conditions from what one reconcile cycle found: a pure function.

Progressing says what the cycle is doing (paused, waiting for creations, the pool full, reconciling,
done); Degraded the worst lasting problem (failures, overlapping ranges, offline nodes, CTs outside the
pool, spec warnings); Ready whether every desired CT runs (or is offloaded on purpose).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pve_operator.api.v1alpha1 import (
    ConditionReason,
    ConditionStatus,
    ConditionType,
    ContainerState,
    ContainerStatus,
)
from pve_operator.handlers.status import ConditionUpdate


@dataclass(frozen=True)
class PolicyCycleFacts:
    """What the conditions depend on, as the cycle found it."""

    paused: bool
    statuses: Sequence[ContainerStatus]
    desired: int
    #: VMIDs in the range PVE is still creating (new creations wait for them).
    pending: Sequence[int] = ()
    #: Node -> why no CT could be placed there (empty: everything was placed).
    placement_refusals: Mapping[str, str] | None = None
    #: Nodes with room that the policy's placement rules (spread, node affinity) refused.
    rule_refused: frozenset[str] = frozenset()
    #: CTs with an older template, and whether spec.updateStrategy rolls them (RollingUpdate).
    outdated: int = 0
    rolling: bool = False
    unplaced: int = 0
    #: (reason, message) of what failed this cycle or keeps failing; None when nothing does.
    failure: tuple[ConditionReason, str] | None = None
    #: The overlapping VMID ranges, described; empty when none overlap.
    overlaps: str = ""
    pool_name: str = ""
    pool_nodes: Sequence[str] = ()
    spec_warnings: Sequence[str] = ()


def policy_conditions(facts: PolicyCycleFacts) -> list[ConditionUpdate]:
    """Progressing, Degraded and Ready, in that order."""
    running = sum(1 for c in facts.statuses if c.state is ContainerState.RUNNING)
    offloaded = sum(1 for c in facts.statuses if c.state is ContainerState.OFFLOADED)
    ready = running + offloaded >= facts.desired and len(facts.statuses) == facts.desired and facts.failure is None
    updates: list[ConditionUpdate] = []
    if facts.paused:
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING, ConditionStatus.FALSE, ConditionReason.PAUSED, "spec.paused is true"
            )
        )
    elif facts.pending and not ready:
        listed = ", ".join(str(v) for v in facts.pending)
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.TRUE,
                ConditionReason.WAITING_FOR_CREATION,
                f"CT(s) {listed} in the VMID range are still being created; new creations wait for them",
            )
        )
    elif facts.placement_refusals and facts.rule_refused:
        why = "; ".join(f"{node}: {why}" for node, why in sorted(facts.placement_refusals.items()))
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.FALSE,
                ConditionReason.UNSCHEDULABLE,
                f"{facts.unplaced} CT(s) cannot be placed: the nodes with room are refused by "
                f"spec.placement's topologySpreadConstraints or nodeAffinity ({why})"[:1024],
            )
        )
    elif facts.placement_refusals:
        usage = "; ".join(f"{node}: {why}" for node, why in sorted(facts.placement_refusals.items()))
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.FALSE,
                ConditionReason.POOL_FULL,
                f"{facts.unplaced} CT(s) cannot be placed: every node is at its limit ({usage})",
            )
        )
    elif facts.outdated and facts.rolling:
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.TRUE,
                ConditionReason.ROLLING_UPDATE,
                f"rolling update: {facts.outdated} CT(s) with an older template to replace; {len(facts.statuses)} CTs "
                f"exist for {facts.desired} wanted ({running} running)",
            )
        )
    elif not ready:
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.TRUE,
                ConditionReason.RECONCILING,
                f"{running} of {facts.desired} CTs running",
            )
        )
    else:
        updates.append(
            ConditionUpdate(
                ConditionType.PROGRESSING,
                ConditionStatus.FALSE,
                ConditionReason.RECONCILED,
                f"{facts.desired} CTs in place",
            )
        )
    if facts.failure is not None:
        updates.append(ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, *facts.failure))
    elif facts.overlaps:
        updates.append(
            ConditionUpdate(
                ConditionType.DEGRADED,
                ConditionStatus.TRUE,
                ConditionReason.VMID_RANGE_OVERLAP,
                facts.overlaps,
            )
        )
    elif unknown := [c for c in facts.statuses if c.state is ContainerState.UNKNOWN]:
        where = ", ".join(sorted({str(c.node) for c in unknown}))
        listed = ", ".join(str(c.vmid) for c in unknown)
        message = f"CT(s) {listed} are on offline node(s) {where}: state unknown, left alone until the node is back"
        updates.append(
            ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, ConditionReason.NODE_OFFLINE, message)
        )
    elif strays := [c for c in facts.statuses if c.node is not None and c.node not in facts.pool_nodes]:
        listed = ", ".join(f"{c.vmid} on {c.node}" for c in strays)
        message = (
            f"CT(s) {listed}: not a node of pool {facts.pool_name}; balancing brings them back when its mode is "
            "Automatic (recommends it otherwise)"
        )
        updates.append(
            ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, ConditionReason.OUTSIDE_POOL, message)
        )
    elif facts.spec_warnings:
        message = "; ".join(facts.spec_warnings)
        updates.append(
            ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.FALSE, ConditionReason.SPEC_WARNING, message)
        )
    else:
        updates.append(ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.FALSE, ConditionReason.AS_EXPECTED, ""))
    if ready:
        updates.append(
            ConditionUpdate(
                ConditionType.READY,
                ConditionStatus.TRUE,
                ConditionReason.ALL_REPLICAS_READY,
                f"{running} of {facts.desired} CTs running",
            )
        )
    elif facts.failure is not None:
        # The first failed cycle already says why, where `kubectl get ctp -o wide` and Argo CD look.
        reason, message = facts.failure
        summary = f"{running} of {facts.desired} CTs running; {message}"
        updates.append(ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, reason, summary[:32768]))
    else:
        updates.append(
            ConditionUpdate(
                ConditionType.READY,
                ConditionStatus.FALSE,
                ConditionReason.REPLICAS_NOT_READY,
                f"{running} of {facts.desired} CTs running",
            )
        )
    return updates

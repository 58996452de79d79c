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
    #: Kept-volume handovers under way: replacement VMID -> the outdated CT whose volumes it receives.
    handovers: Mapping[int, int] | None = None
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
    # A rollout's surge CTs may make more CTs than desired: ready once the desired count runs.
    ready = running + offloaded >= facts.desired and len(facts.statuses) >= facts.desired and facts.failure is None
    return [_progressing(facts, running, ready), _degraded(facts), _ready(facts, running, ready)]


def _progressing(facts: PolicyCycleFacts, running: int, ready: bool) -> ConditionUpdate:
    """What the cycle is doing, the first case that holds: paused, waiting for creations, unschedulable,
    pool full, rolling update, reconciling, reconciled."""
    progressing, stopped = ConditionStatus.TRUE, ConditionStatus.FALSE
    if facts.paused:
        return _progress(stopped, ConditionReason.PAUSED, "spec.paused is true")
    if facts.pending and not ready:
        listed = ", ".join(str(v) for v in facts.pending)
        return _progress(
            progressing,
            ConditionReason.WAITING_FOR_CREATION,
            f"CT(s) {listed} in the VMID range are still being created; new creations wait for them",
        )
    if facts.placement_refusals:
        why = "; ".join(f"{node}: {why}" for node, why in sorted(facts.placement_refusals.items()))
        if facts.rule_refused:
            return _progress(
                stopped,
                ConditionReason.UNSCHEDULABLE,
                f"{facts.unplaced} CT(s) cannot be placed: the nodes with room are refused by "
                f"spec.placement's topologySpreadConstraints or nodeAffinity ({why})"[:1024],
            )
        return _progress(
            stopped,
            ConditionReason.POOL_FULL,
            f"{facts.unplaced} CT(s) cannot be placed: every node is at its limit ({why})",
        )
    if facts.outdated and facts.rolling:
        return _progress(
            progressing,
            ConditionReason.ROLLING_UPDATE,
            (
                f"rolling update: {facts.outdated} CT(s) with an older template to replace; {len(facts.statuses)} CTs "
                f"exist for {facts.desired} wanted ({running} running)" + _handovers_said(facts.handovers)
            )[:1024],
        )
    if not ready or len(facts.statuses) > facts.desired:
        return _progress(progressing, ConditionReason.RECONCILING, f"{running} of {facts.desired} CTs running")
    return _progress(stopped, ConditionReason.RECONCILED, f"{facts.desired} CTs in place")


def _handovers_said(handovers: Mapping[int, int] | None) -> str:
    if not handovers:
        return ""
    pairs = ", ".join(f"CT {source} → {target}" for target, source in sorted(handovers.items()))
    return f"; kept volumes being handed over: {pairs}"


def _progress(status: ConditionStatus, reason: ConditionReason, message: str) -> ConditionUpdate:
    return ConditionUpdate(ConditionType.PROGRESSING, status, reason, message)


def _degraded(facts: PolicyCycleFacts) -> ConditionUpdate:
    """The worst lasting problem: a failure, overlapping VMID ranges, CTs on offline nodes, CTs outside the
    pool; otherwise spec warnings (Degraded stays False) or nothing."""
    if facts.failure is not None:
        return ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, *facts.failure)
    if facts.overlaps:
        return _problem(ConditionReason.VMID_RANGE_OVERLAP, facts.overlaps)
    if unknown := [c for c in facts.statuses if c.state is ContainerState.UNKNOWN]:
        where = ", ".join(sorted({str(c.node) for c in unknown}))
        listed = ", ".join(str(c.vmid) for c in unknown)
        return _problem(
            ConditionReason.NODE_OFFLINE,
            f"CT(s) {listed} are on offline node(s) {where}: state unknown, left alone until the node is back",
        )
    if strays := [c for c in facts.statuses if c.node is not None and c.node not in facts.pool_nodes]:
        listed = ", ".join(f"{c.vmid} on {c.node}" for c in strays)
        return _problem(
            ConditionReason.OUTSIDE_POOL,
            f"CT(s) {listed}: not a node of pool {facts.pool_name}; balancing brings them back when its mode is "
            "Automatic (recommends it otherwise)",
        )
    if facts.spec_warnings:
        message = "; ".join(facts.spec_warnings)
        return ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.FALSE, ConditionReason.SPEC_WARNING, message)
    return ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.FALSE, ConditionReason.AS_EXPECTED, "")


def _problem(reason: ConditionReason, message: str) -> ConditionUpdate:
    return ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, reason, message)


def _ready(facts: PolicyCycleFacts, running: int, ready: bool) -> ConditionUpdate:
    """Whether every desired CT runs (or is offloaded on purpose); when not, the failure's reason if any."""
    counted = f"{running} of {facts.desired} CTs running"
    if ready:
        return ConditionUpdate(ConditionType.READY, ConditionStatus.TRUE, ConditionReason.ALL_REPLICAS_READY, counted)
    if facts.failure is not None:
        # The first failed cycle already says why, where `kubectl get ctp -o wide` and Argo CD look.
        reason, message = facts.failure
        return ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, reason, f"{counted}; {message}"[:32768])
    return ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, ConditionReason.REPLICAS_NOT_READY, counted)

"""``offload``: stop just enough of our CTs on a node that stays above ``offloadAbovePercent``.

This is the tier none of the anchors has: when migration cannot relieve a node (no target has room,
or the moves are limited this cycle), shed load by stopping CTs and bring them back later (``restore``).

* A pool node is offloaded only when its last ``sustainedSamples`` samples are all above the offload
  threshold and its projected use still is. In ``plan_balance`` this strategy runs on the state
  *after* the migrations the limits let through this cycle, so offload covers only what those leave.
* Victims: our running CTs on the node, lowest policy priority first, the oldest first within a
  priority (the lab's rule), then by vmid. Pinned, locked, in-flight CTs and CTs in cooldown are
  skipped and reported. A CT whose stop would not lower the metric (disk, or a ``max`` dominated by
  disk) is skipped: stopping it would cost a service and buy nothing.
* Stop as soon as the node is projected at or under the threshold: the fewest CTs, not a fixed count.
  If every eligible CT is stopped and the node is still above, that is reported (``NoRelief``).

Stopped CTs are marked offloaded (a tag on the CT), never destroyed: restore starts them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, OffloadContainer
from pve_operator.planning.balancing.eligibility import blocked, managed_by_node, refusal
from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.proposal import Proposal, Refusal, RefusalKind
from pve_operator.planning.balancing.state import (
    EPSILON,
    WorkingState,
    above,
    pct,
    percent,
    samples_above,
    sustained_above,
    threshold_figure,
)
from pve_operator.planning.balancing.strategy import Strategy


@dataclass(frozen=True)
class OffloadArgs:
    """Options of the offload strategy."""

    #: Stop pinned CTs too when nothing else relieves the node (off: a pin protects from being stopped).
    include_pinned: bool = False


def propose(inp: BalancingInput, args: OffloadArgs) -> Proposal:
    """Offloads for nodes sustained above the offload threshold, in pool order."""
    metric = inp.thresholds.metric
    limit = inp.thresholds.offload_above_fraction
    samples_needed = inp.thresholds.sustained_samples
    state = WorkingState(inp.snapshot, metric)
    by_node = managed_by_node(inp, state)
    actions: list[BalanceAction] = []
    refusals: list[Refusal] = []
    for spec in inp.pool_nodes:
        node = state.nodes.get(spec.name)
        if node is None or not node.online:
            continue
        start = node.fraction(metric)
        if not above(start, limit):
            continue
        samples = inp.history.get(spec.name)
        if not sustained_above(samples, samples_needed, limit):
            refusals.append(
                Refusal(
                    kind=RefusalKind.NOT_SUSTAINED,
                    stage="Offload",
                    node=spec.name,
                    reason=(
                        f"{spec.name} {metric.value} {pct(start)} > offloadAbovePercent {threshold_figure(limit)} "
                        f"in {samples_above(samples, samples_needed, limit)} of the last {samples_needed} samples: "
                        "waiting for it to last"
                    ),
                )
            )
            continue
        victims = []
        blocked_here: list[Refusal] = []
        for ct, managed in by_node.get(spec.name, []):
            if not state.running[ct.vmid]:
                continue
            why = blocked(inp, ct, managed, pin=not args.include_pinned)
            if why is not None:
                blocked_here.append(refusal("Offload", why, ct.vmid, spec.name))
                continue
            victims.append((managed.priority, managed.created_at, ct.vmid))
        victims.sort()
        for priority, created_at, vmid in victims:
            before = node.fraction(metric)
            if not above(before, limit):
                break
            after = node.fraction(metric, state.load[vmid].running_part, -1)
            if after >= before - EPSILON:
                continue
            state.stop(vmid)
            managed = inp.managed[vmid]
            actions.append(
                OffloadContainer(
                    vmid=vmid,
                    node=spec.name,
                    reason=(
                        f"{spec.name} {metric.value} {pct(start)} > offloadAbovePercent {threshold_figure(limit)} "
                        f"for {samples_needed} samples; offload CT {vmid} (policy {managed.policy}, priority "
                        f"{priority}, created {created_at}): {spec.name} {pct(before)} → {pct(after)}"
                    ),
                    source_percent_before=percent(before),
                    source_percent_after=percent(after),
                )
            )
        final = node.fraction(metric)
        if above(final, limit):
            blocked_note = f"; {len(blocked_here)} CT(s) could not be stopped (see their refusals)" * bool(blocked_here)
            refusals.append(
                Refusal(
                    kind=RefusalKind.NO_RELIEF,
                    stage="Offload",
                    node=spec.name,
                    reason=(
                        f"{spec.name} stays at {metric.value} {pct(final)} > offloadAbovePercent "
                        f"{threshold_figure(limit)}: stopping more of the operator's CTs would not bring it under"
                        + blocked_note
                    ),
                )
            )
            refusals.extend(blocked_here)
    return Proposal(actions=tuple(actions), refusals=tuple(refusals))


STRATEGY = Strategy(
    name="offload",
    stage="Offload",
    args_type=OffloadArgs,
    propose_fn=propose,
    description="Stop the lowest-priority, oldest CTs on nodes that stay above offloadAbovePercent, just enough "
    "to bring them under it.",
)

"""``firstFit``: the lab's balancer, kept as the baseline the benchmark measures the others against.

For every pool node above ``migrateAbovePercent`` *right now* (no sustained samples, no hysteresis), it
migrates the first CT of ours found there (lowest vmid among the running ones that are not locked or
in flight) to the first other online pool node not in maintenance, in pool order, without looking at
the target's load. It never touches a foreign CT. Through ``plan_balance`` the limits would refuse the
moves that overcommit their target; the benchmark applies its proposals raw, as the lab did.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, MigrateContainer
from pve_operator.planning.balancing.eligibility import managed_by_node
from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.proposal import Proposal
from pve_operator.planning.balancing.spread import target_refusal
from pve_operator.planning.balancing.state import WorkingState, above, pct, percent, threshold_figure
from pve_operator.planning.balancing.strategy import Strategy


@dataclass(frozen=True)
class FirstFitArgs:
    """firstFit has no options: it is the baseline as it was."""


def propose(inp: BalancingInput, args: FirstFitArgs) -> Proposal:
    """One move per node above the migrate threshold: first CT to the first other node."""
    metric = inp.thresholds.metric
    limit = inp.thresholds.migrate_above_fraction
    state = WorkingState(inp.snapshot, metric)
    by_node = managed_by_node(inp, state)
    busy = inp.in_flight.busy_vmids
    actions: list[BalanceAction] = []
    for spec in inp.pool_nodes:
        node = state.nodes.get(spec.name)
        if node is None or not node.online or not above(node.fraction(metric), limit):
            continue
        first = next(
            (ct for ct, _ in by_node.get(spec.name, []) if ct.running and not ct.lock and ct.vmid not in busy),
            None,
        )
        target = next(
            (
                other.name
                for other in inp.pool_nodes
                if other.name != spec.name
                and (first is None or target_refusal(inp, state, first.vmid, other.name) is None)
                and not other.maintenance
                and other.name in state.nodes
                and state.nodes[other.name].online
            ),
            None,
        )
        if first is None or target is None:
            continue
        source_before, target_before = state.fraction(spec.name), state.fraction(target)
        state.move(first.vmid, target)
        source_after, target_after = state.fraction(spec.name), state.fraction(target)
        actions.append(
            MigrateContainer(
                vmid=first.vmid,
                node=spec.name,
                target=target,
                running=True,
                reason=(
                    f"firstFit: {spec.name} {metric.value} {pct(source_before)} > migrateAbovePercent "
                    f"{threshold_figure(limit)}; first CT {first.vmid} → first other node {target}: "
                    f"{spec.name} {pct(source_before)} → {pct(source_after)}, {target} {pct(target_before)} → "
                    f"{pct(target_after)}"
                ),
                source_percent_before=percent(source_before),
                source_percent_after=percent(source_after),
                target_percent_before=percent(target_before),
                target_percent_after=percent(target_after),
            )
        )
    return Proposal(actions=tuple(actions))


STRATEGY = Strategy(
    name="firstFit",
    stage="Migrate",
    args_type=FirstFitArgs,
    propose_fn=propose,
    description="The lab's baseline: first CT of each node above migrateAbovePercent to the first other node, "
    "unchecked.",
)

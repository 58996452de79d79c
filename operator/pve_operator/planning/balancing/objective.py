"""The objective the planner must never make worse, in the order it matters.

Lexicographic, over the pool's online nodes, with ``τ`` the migrate threshold:

1. ``nodes_above``: how many nodes are above ``τ`` (each is a node users see as overloaded);
2. ``peak_excess``: how far the most loaded node is above ``τ`` (0 when none is);
3. ``squared_excess``: the sum over nodes of the squared excess above ``τ`` (spreads the remaining
   overload instead of piling it on one node).

Only load *above* the threshold counts. Below it the operator deliberately leaves nodes alone
(hysteresis), and a restore or a drain that raises a calm node's use while keeping it under ``τ`` is
not a loss. Every plan of ``plan_balance`` keeps each component at or below its value before the plan
(the property tests check it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pve_operator.planning.balancing.inputs import Thresholds
from pve_operator.planning.balancing.state import EPSILON
from pve_operator.planning.model import ClusterSnapshot


@dataclass(frozen=True, order=True)
class Objective:
    nodes_above: int
    peak_excess: float
    squared_excess: float

    def worse_than(self, other: Objective, tolerance: float = 1e-9) -> bool:
        """Lexicographically worse than ``other``, ignoring float noise below ``tolerance``."""
        if self.nodes_above != other.nodes_above:
            return self.nodes_above > other.nodes_above
        if abs(self.peak_excess - other.peak_excess) > tolerance:
            return self.peak_excess > other.peak_excess
        return self.squared_excess > other.squared_excess + tolerance


def objective(snapshot: ClusterSnapshot, nodes: Iterable[str], thresholds: Thresholds) -> Objective:
    """The objective of ``snapshot`` over the online nodes among ``nodes``."""
    limit = thresholds.migrate_above_fraction
    excesses = [
        max(0.0, snapshot.nodes[name].used_fraction(thresholds.metric) - limit)
        for name in nodes
        if name in snapshot.nodes and snapshot.nodes[name].online
    ]
    return Objective(
        nodes_above=sum(1 for e in excesses if e > EPSILON),
        peak_excess=max(excesses, default=0.0),
        squared_excess=sum(e * e for e in excesses),
    )

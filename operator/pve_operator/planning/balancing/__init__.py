"""Balancing: migrate CTs off loaded nodes, offload under pressure, restore when room returns.

Pure like the rest of ``planning``: the cluster snapshot, the node sample history and ``now`` are
arguments (:class:`BalancingInput`), the result is data (:class:`BalancePlan`), and the same input
always gives the same plan. Entry points:

* :func:`plan_balance` runs the migration strategy, then offload, then restore, each on the state the
  previous ones leave, and applies the limits once (``limits.py``);
* :func:`project` applies actions to a snapshot (the operator uses it to apply its in-flight journal
  to PVE's lagging statistics, so the same move is never planned twice);
* :func:`get_strategy` / :func:`strategy_names` / :func:`register` give the strategies by name
  (``rebalance``, ``offload``, ``restore``, ``firstFit``; ``level``, the Level objective's, is
  ``level.STRATEGY``) with their args models.
"""

from pve_operator.planning.balancing.first_fit import FirstFitArgs
from pve_operator.planning.balancing.inputs import (
    PINNED_TAG,
    BalancingInput,
    BalancingLimits,
    BalancingObjective,
    InFlight,
    ManagedCT,
    PoolNodeSpec,
    PressureResource,
    PressureTrigger,
    Thresholds,
    with_stray_nodes,
)
from pve_operator.planning.balancing.level import LevelArgs
from pve_operator.planning.balancing.limits import LimitedActions, Limiter, apply_limits, is_migration
from pve_operator.planning.balancing.objective import Objective, objective
from pve_operator.planning.balancing.offload import OffloadArgs
from pve_operator.planning.balancing.plan import BalancePlan, plan_balance
from pve_operator.planning.balancing.proposal import Proposal, Refusal, RefusalKind, Stage
from pve_operator.planning.balancing.rebalance import RebalanceArgs
from pve_operator.planning.balancing.registry import get_strategy, register, strategy_names
from pve_operator.planning.balancing.restore import RestoreArgs
from pve_operator.planning.balancing.state import project
from pve_operator.planning.balancing.strategy import Strategy

__all__ = [
    "PINNED_TAG",
    "BalancePlan",
    "BalancingInput",
    "BalancingLimits",
    "BalancingObjective",
    "FirstFitArgs",
    "InFlight",
    "LevelArgs",
    "LimitedActions",
    "Limiter",
    "ManagedCT",
    "Objective",
    "OffloadArgs",
    "PoolNodeSpec",
    "PressureResource",
    "PressureTrigger",
    "Proposal",
    "RebalanceArgs",
    "Refusal",
    "RefusalKind",
    "RestoreArgs",
    "Stage",
    "Strategy",
    "Thresholds",
    "apply_limits",
    "get_strategy",
    "is_migration",
    "objective",
    "plan_balance",
    "project",
    "register",
    "strategy_names",
    "with_stray_nodes",
]

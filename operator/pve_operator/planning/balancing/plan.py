"""``plan_balance``: one balancing cycle, from input to a limited, ordered, explained plan.

The order, each stage planned on the state the previous ones leave (projected, limits applied):

1. **Migrate** (``rebalance``, or ``level`` for the Level objective): relieve nodes that stay above
   ``migrateAbovePercent`` and drain maintenance nodes (Level then lowers the pool's peak). Migration is tried first
   because it keeps every CT running.
2. **Offload**: on nodes still above ``offloadAbovePercent`` after the migrations the limits let
   through this cycle, stop just enough low-priority CTs. Planned against the *limited* migrations on
   purpose: a node above the offload threshold is in danger now, and migrations held back by
   ``maxConcurrentMigrations`` may take several cycles.
3. **Restore**: start offloaded CTs where nodes stay under ``restoreBelowPercent`` with them.

A CT acted on in one stage is left alone by the later ones. When offload or restore admitted
something, the three stages run again on the result (at most ``MAX_ROUNDS`` rounds): an offload can
free room that lets a node rebalance could not relieve migrate after all, and planning it now rather
than next cycle makes the plan a fixed point (planning again on its projected result proposes
nothing, unless the limits held something back). Modes: ``balancing_enabled`` /
``offload_enabled`` False (mode Off) skips the stages; Recommend is the caller's business (it shows the
plan instead of executing it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pve_operator.planning.actions import BalanceAction, MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.balancing.inputs import BalancingInput, BalancingObjective
from pve_operator.planning.balancing.limits import Limiter
from pve_operator.planning.balancing.proposal import Refusal
from pve_operator.planning.balancing.registry import get_strategy
from pve_operator.planning.balancing.state import project
from pve_operator.planning.balancing.strategy import Strategy
from pve_operator.planning.model import ClusterSnapshot

#: Rounds of migrate/offload/restore in one plan. Each round after the first only runs because the previous
#: one stopped or moved CTs, and every CT is acted on at most once per plan, so two rounds are the norm.
MAX_ROUNDS = 4


@dataclass(frozen=True)
class BalancePlan:
    """The actions of one cycle in a safe order, why other things were not done, and the expected result."""

    actions: tuple[BalanceAction, ...]
    refusals: tuple[Refusal, ...]
    #: vmid -> vmids whose actions must finish before it starts (they free the room it needs). Start
    #: actions in plan order, each once its dependencies are done; see ``limits.py``.
    depends_on: Mapping[int, tuple[int, ...]]
    #: The snapshot once every action is done (``project(snapshot, actions)``).
    projected: ClusterSnapshot
    #: What the strategies proposed before the limits, in stage order (may repeat a move across rounds).
    proposed: tuple[BalanceAction, ...] = ()

    @property
    def migrations(self) -> tuple[MigrateContainer, ...]:
        return tuple(a for a in self.actions if isinstance(a, MigrateContainer))

    @property
    def offloads(self) -> tuple[OffloadContainer, ...]:
        return tuple(a for a in self.actions if isinstance(a, OffloadContainer))

    @property
    def restores(self) -> tuple[RestoreContainer, ...]:
        return tuple(a for a in self.actions if isinstance(a, RestoreContainer))


def plan_balance(
    inp: BalancingInput,
    *,
    migration: str | None = None,
    args: Mapping[str, object] | None = None,
) -> BalancePlan:
    """Plan one cycle: ``migration`` strategy, then ``offload``, then ``restore``, then limits.

    ``migration`` defaults to the input's objective: ``rebalance`` for Relieve, ``level`` for Level.
    ``args`` maps a strategy name to its args object (e.g. ``{"rebalance": RebalanceArgs(...)}``);
    strategies without an entry use their defaults.
    """
    args = args or {}
    if migration is None:
        migration = "level" if inp.limits.objective is BalancingObjective.LEVEL else "rebalance"
    stages: list[Strategy[Any]] = []
    if inp.balancing_enabled:
        strategy: Strategy[Any] = get_strategy(migration)
        if strategy.stage != "Migrate":
            raise ValueError(f"strategy {migration!r} plans {strategy.stage}, not Migrate")
        stages.append(strategy)
    if inp.offload_enabled:
        stages += [get_strategy("offload"), get_strategy("restore")]

    limiter = Limiter(inp)
    refusals: dict[tuple[object, ...], Refusal] = {}
    proposed: list[BalanceAction] = []
    current = inp
    for _ in range(MAX_ROUNDS):
        shed = False
        for strategy in stages:
            proposal = strategy.propose(current, args.get(strategy.name))
            proposed.extend(proposal.actions)
            admitted, refused = limiter.admit(proposal.actions)
            for item in (*proposal.refusals, *refused):
                # A later round repeats what still holds, with the figures after this plan: keep those.
                key = (item.kind, item.stage, item.vmid, item.node)
                refusals.pop(key, None)
                refusals[key] = item
            shed = shed or (strategy.stage != "Migrate" and bool(admitted))
            current = replace(
                inp,
                snapshot=project(inp.snapshot, limiter.admitted),
                in_flight=inp.in_flight.with_planned(limiter.acted_vmids),
            )
        if not shed:
            break
    return BalancePlan(
        actions=limiter.admitted,
        refusals=tuple(refusals.values()),
        depends_on=limiter.depends_on,
        projected=current.snapshot,
        proposed=tuple(proposed),
    )

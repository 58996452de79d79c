"""``rebalance``: migrate CTs off nodes that stay above ``migrateAbovePercent``, and drain maintenance nodes.

What it acts on (the hysteresis band is where it does nothing):

* a pool node whose last ``sustainedSamples`` samples are all above the migrate threshold *and* whose
  (projected) use is still above it: a spike shorter than that is only reported (``NotSustained``);
* a pool node in maintenance: every CT of ours leaves it, whatever its load (cooldown does not apply,
  the user asked for it; pins, locks and operations in flight still do).

How a move is chosen, one at a time on the projected state:

1. The most loaded source still above the threshold goes first.
2. Its candidates are our CTs there that are not pinned, locked, in flight, in cooldown, offloaded
   (restore owns those) or of unknown state. A candidate's *benefit* is the part of the source's
   excess over the threshold that moving it removes (capped at the excess: relief beyond the line is
   not what this strategy is for); its *cost* counts one migration, the restart downtime of a running
   CT (LXC cannot migrate live) and the gigabytes of memory and disk to move. Candidates are tried by
   benefit per cost, so the fewest, cheapest moves that clear the excess win, and target room is not
   spent on CTs bigger than needed.
3. A candidate goes to the pool node that is coolest after the move among those that stay at or under
   the threshold (projected), physically fit it, are online, not in maintenance, have weight > 0, and
   where the move narrows the source-target gap by at least ``minImprovementPercent`` (percentage
   points; a move that overshoots and leaves the target hotter than the source is counted as the gap it
   leaves). A source with no such move is *stuck* and reported (``NoTarget`` or ``BelowMinImprovement``,
   with the CTs that were not eligible).
4. A source that drops under the threshold may receive CTs from the others (stuck sources are then
   tried again: that room is new). Moves into it come after the moves out of it, so no intermediate
   state overcommits it.

Planning ends when no source above the threshold has a move left, so planning again on the projected
result proposes nothing (a fixed point): sources are under the threshold or still stuck, and targets
only ever got fuller.

Maintenance drains are planned after the relief of overloaded nodes (relief is more urgent), largest
CT first, each to the coolest node that stays under the threshold; the improvement gate does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, MigrateContainer
from pve_operator.planning.balancing.eligibility import blocked, managed_by_node, receiving_nodes, refusal
from pve_operator.planning.balancing.inputs import BalancingInput, ManagedCT
from pve_operator.planning.balancing.proposal import Proposal, Refusal, RefusalKind
from pve_operator.planning.balancing.state import (
    EPSILON,
    GIB,
    Load,
    WorkingState,
    above,
    pct,
    percent,
    samples_above,
    sustained_above,
    threshold_figure,
)
from pve_operator.planning.balancing.strategy import Strategy
from pve_operator.planning.model import ContainerObservation


@dataclass(frozen=True)
class RebalanceArgs:
    """Weights of the move cost, in units of "one migration of an empty stopped CT".

    The defaults make the number of restarts dominate (a running CT is down for its whole move) and let
    the bytes to copy break ties, so 16 GiB of memory weigh about as much as one more migration.
    """

    migration_cost: float = 1.0
    restart_cost: float = 1.0
    memory_cost_per_gib: float = 1 / 16
    disk_cost_per_gib: float = 1 / 256
    #: Drain maintenance nodes (off: their CTs stay until the user empties them).
    drain_maintenance: bool = True

    def __post_init__(self) -> None:
        if self.migration_cost <= 0:
            raise ValueError(f"migration_cost must be above 0, got {self.migration_cost}")
        for name in ("restart_cost", "memory_cost_per_gib", "disk_cost_per_gib"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    def cost(self, load: Load, running: bool) -> float:
        return (
            self.migration_cost
            + (self.restart_cost if running else 0.0)
            + self.memory_cost_per_gib * load.memory_bytes / GIB
            + self.disk_cost_per_gib * load.disk_bytes / GIB
        )


@dataclass
class _Source:
    """A node being relieved: its figure when the cycle started and what kept CTs from moving."""

    name: str
    start_fraction: float
    candidates: list[int]
    blocked: list[Refusal]
    gate_blocked: bool = False


class _Planner:
    def __init__(self, inp: BalancingInput, args: RebalanceArgs) -> None:
        self.inp = inp
        self.args = args
        self.metric = inp.thresholds.metric
        self.limit = inp.thresholds.migrate_above_fraction
        self.min_improvement = max(inp.limits.min_improvement_fraction, EPSILON)
        self.state = WorkingState(inp.snapshot, self.metric)
        self.order = {spec.name: i for i, spec in enumerate(inp.pool_nodes)}
        self.targets = receiving_nodes(inp, self.state)
        self.by_node = managed_by_node(inp, self.state)
        self.actions: list[BalanceAction] = []
        self.refusals: list[Refusal] = []
        self.moved: set[int] = set()

    # -- sources ---------------------------------------------------------------------------------

    def overloaded_sources(self) -> list[_Source]:
        thresholds = self.inp.thresholds
        sources = []
        for spec in self.inp.pool_nodes:
            node = self.state.nodes.get(spec.name)
            if node is None or not node.online or spec.maintenance:
                continue
            now = node.fraction(self.metric)
            if not above(now, self.limit):
                continue
            samples = self.inp.history.get(spec.name)
            if not sustained_above(samples, thresholds.sustained_samples, self.limit):
                seen = samples_above(samples, thresholds.sustained_samples, self.limit)
                self.refusals.append(
                    Refusal(
                        kind=RefusalKind.NOT_SUSTAINED,
                        stage="Migrate",
                        node=spec.name,
                        reason=(
                            f"{spec.name} {self.metric.value} {pct(now)} > migrateAbovePercent "
                            f"{threshold_figure(self.limit)} in {seen} of the last {thresholds.sustained_samples} "
                            "samples: waiting for it to last"
                        ),
                    )
                )
                continue
            sources.append(self._source(spec.name, now, cooldown=True))
        return sources

    def _source(self, name: str, now: float, *, cooldown: bool) -> _Source:
        candidates: list[int] = []
        blocked_here: list[Refusal] = []
        for ct, managed in self.by_node.get(name, []):
            if managed.offloaded and cooldown:
                continue  # restore owns offloaded CTs; a drain (cooldown False) moves them too
            why = blocked(self.inp, ct, managed, cooldown=cooldown)
            if why is not None:
                blocked_here.append(refusal("Migrate", why, ct.vmid, name))
                continue
            if self.state.load[ct.vmid] == Load(0.0, 0, 0):
                continue
            candidates.append(ct.vmid)
        return _Source(name, now, candidates, blocked_here)

    # -- relief of overloaded nodes --------------------------------------------------------------

    def relieve(self, sources: list[_Source]) -> None:
        stuck: set[str] = set()
        while True:
            active = [
                s for s in sources if s.name not in stuck and above(self.state.fraction(s.name), self.limit)
            ]
            if not active:
                return
            source = max(active, key=lambda s: (self.state.fraction(s.name), -self.order[s.name]))
            move = self.best_relief(source)
            if move is None:
                stuck.add(source.name)
                continue
            vmid, target = move
            self.migrate(source, vmid, target, evacuation=False)
            if not above(self.state.fraction(source.name), self.limit):
                stuck.clear()  # the relieved source is a new target for the stuck ones

    def best_relief(self, source: _Source) -> tuple[int, str] | None:
        state = self.state
        node = state.nodes[source.name]
        now = node.fraction(self.metric)
        excess = now - self.limit + EPSILON
        ranked: list[tuple[float, float, int, float]] = []
        for vmid in source.candidates:
            if vmid in self.moved:
                continue
            load = state.load[vmid]
            after = node.fraction(self.metric, load, -1)
            relief = now - after
            if relief <= EPSILON:
                continue
            cost = self.args.cost(load, state.running[vmid])
            ranked.append((-min(relief, excess) / cost, cost, vmid, after))
        ranked.sort()
        for _, _, vmid, after in ranked:
            target = self.best_target(source, now, after, state.load[vmid])
            if target is not None:
                return vmid, target
        return None

    def best_target(self, source: _Source, now: float, after: float, load: Load) -> str | None:
        best: tuple[float, int, str] | None = None
        for name in self.targets:
            if name == source.name:
                continue
            node = self.state.nodes[name]
            target_now = node.fraction(self.metric)
            target_after = node.fraction(self.metric, load)
            if above(target_after, self.limit) or not node.fits(load):
                continue
            improvement = (now - target_now) - abs(after - target_after)
            if improvement < self.min_improvement - EPSILON:
                source.gate_blocked = True
                continue
            key = (target_after, self.order[name], name)
            if best is None or key < best:
                best = key
        return best[2] if best is not None else None

    # -- maintenance drain -----------------------------------------------------------------------

    def drain(self) -> None:
        for spec in self.inp.pool_nodes:
            node = self.state.nodes.get(spec.name)
            if not spec.maintenance or node is None or not node.online:
                continue
            source = self._source(spec.name, node.fraction(self.metric), cooldown=False)
            self.refusals.extend(
                Refusal(r.kind, r.stage, f"{r.reason}: it stays on maintenance node {spec.name}", r.vmid, r.node)
                for r in source.blocked
            )
            sized = sorted(
                source.candidates,
                key=lambda v: (-node.fraction(self.metric) + node.fraction(self.metric, self.state.load[v], -1), v),
            )
            for vmid in sized:
                load = self.state.load[vmid]
                best: tuple[float, int, str] | None = None
                for name in self.targets:
                    target = self.state.nodes[name]
                    target_after = target.fraction(self.metric, load)
                    if name == spec.name or above(target_after, self.limit) or not target.fits(load):
                        continue
                    key = (target_after, self.order[name], name)
                    if best is None or key < best:
                        best = key
                if best is None:
                    self.refusals.append(
                        Refusal(
                            kind=RefusalKind.NO_TARGET,
                            stage="Migrate",
                            vmid=vmid,
                            node=spec.name,
                            reason=(
                                f"CT {vmid} stays on maintenance node {spec.name}: no node has room for it at or "
                                f"under migrateAbovePercent {threshold_figure(self.limit)}"
                            ),
                        )
                    )
                    continue
                self.migrate(source, vmid, best[2], evacuation=True)

    # -- bookkeeping -----------------------------------------------------------------------------

    def migrate(self, source: _Source, vmid: int, target: str, *, evacuation: bool) -> None:
        state = self.state
        ct: ContainerObservation = self.inp.snapshot.containers[vmid]
        managed: ManagedCT = self.inp.managed[vmid]
        source_before = state.fraction(source.name)
        target_before = state.fraction(target)
        running = state.running[vmid]
        state.move(vmid, target)
        self.moved.add(vmid)
        source_after = state.fraction(source.name)
        target_after = state.fraction(target)
        metric = self.metric.value
        if evacuation:
            why = f"{source.name} is in maintenance: drain"
        else:
            why = (
                f"{source.name} {metric} {pct(source.start_fraction)} > migrateAbovePercent "
                f"{threshold_figure(self.limit)} for {self.inp.thresholds.sustained_samples} samples"
            )
        how = " (restart migration: the CT is down while it moves)" if running else " (stopped migration)"
        self.actions.append(
            MigrateContainer(
                vmid=vmid,
                node=source.name,
                target=target,
                running=running,
                evacuation=evacuation,
                reason=(
                    f"{why}; CT {vmid} ({ct.name or managed.policy}) → {target}: {source.name} {pct(source_before)} → "
                    f"{pct(source_after)}, {target} {pct(target_before)} → {pct(target_after)}{how}"
                ),
                source_percent_before=percent(source_before),
                source_percent_after=percent(source_after),
                target_percent_before=percent(target_before),
                target_percent_after=percent(target_after),
            )
        )

    def explain_stuck(self, sources: list[_Source]) -> None:
        for source in sources:
            now = self.state.fraction(source.name)
            if not above(now, self.limit):
                continue
            kind = RefusalKind.BELOW_MIN_IMPROVEMENT if source.gate_blocked else RefusalKind.NO_TARGET
            if source.gate_blocked:
                detail = (
                    f"every move left narrows the gap to its target by less than minImprovementPercent "
                    f"{threshold_figure(self.inp.limits.min_improvement_fraction)}"
                )
            else:
                detail = (
                    f"no node has room for any movable CT at or under migrateAbovePercent "
                    f"{threshold_figure(self.limit)}"
                )
            if source.blocked:
                detail += f"; {len(source.blocked)} CT(s) not movable (see their refusals)"
            self.refusals.append(
                Refusal(
                    kind=kind,
                    stage="Migrate",
                    node=source.name,
                    reason=(
                        f"{source.name} stays at {self.metric.value} {pct(now)} > migrateAbovePercent "
                        f"{threshold_figure(self.limit)}: {detail}"
                    ),
                )
            )
            self.refusals.extend(source.blocked)


def propose(inp: BalancingInput, args: RebalanceArgs) -> Proposal:
    """Relief moves for sustained-overloaded nodes (most loaded first), then maintenance drains."""
    planner = _Planner(inp, args)
    sources = planner.overloaded_sources()
    planner.relieve(sources)
    planner.explain_stuck(sources)
    if args.drain_maintenance:
        planner.drain()
    return Proposal(actions=tuple(planner.actions), refusals=tuple(planner.refusals))


STRATEGY = Strategy(
    name="rebalance",
    stage="Migrate",
    args_type=RebalanceArgs,
    propose_fn=propose,
    description="Migrate CTs off nodes that stay above migrateAbovePercent, never taking a target above it; "
    "drain maintenance nodes.",
)

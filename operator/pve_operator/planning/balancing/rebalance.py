"""``rebalance``: migrate CTs off nodes that stay above ``migrateAbovePercent``, and drain maintenance nodes.

What it acts on (the hysteresis band is where it does nothing):

* a pool node whose last ``sustainedSamples`` samples are all above the migrate threshold *and* whose
  (projected) use is still above it: a spike shorter than that is only reported (``NotSustained``);
* a pool node in maintenance: every CT of ours leaves it, whatever its load (cooldown does not apply,
  the user asked for it; pins, locks and operations in flight still do).

How a move is chosen, one at a time on the projected state:

1. The most loaded source still above the threshold goes first.
2. Its candidates are our CTs there that are not pinned, locked, in flight, in cooldown, offloaded
   (restore owns those) or of unknown state. A candidate's *cost* counts one migration, the restart
   downtime of a running CT (LXC cannot migrate live) and the gigabytes of memory and disk to move.
   CTs that clear the source's whole excess in one move come first, cheapest first (one move is the
   fewest, and target room is not spent on CTs bigger than needed); otherwise the most relief per cost
   (for CTs of one kind: the largest first, which covers the excess in the fewest moves).
3. A candidate goes to the pool node that is coolest after the move among those that stay at or under
   the threshold (projected), physically fit it, are online, not in maintenance, have weight > 0, and
   (relief moves are not gated by ``minImprovementPercent``: bringing a node back under the threshold
   is the point, and a node full of small CTs must be able to do it one small CT at a time). A source
   with no such move is *stuck* and reported (``NoTarget``, with the CTs that were not eligible).
4. A source that drops under the threshold may receive CTs from the others (stuck sources are then
   tried again: that room is new). Moves into it come after the moves out of it, so no intermediate
   state overcommits it.

5. Polish (best-improvement local search): while the pool's most loaded node is the source or the
   target of a planned move, try that move with a bigger CT of the same source or another target, and
   keep the change that lowers the peak most, without adding a move or breaking any rule above. The
   greedy alone clears the excess with the fewest moves but leaves each source just under the line;
   the polish buys headroom at no extra restart (``bench/planner.py`` measures both against the MILP
   optimum). The relief then runs once more, in case the polish freed room a stuck source can use.

Planning ends when no source above the threshold has a move left, so planning again on the projected
result proposes nothing (a fixed point): sources are under the threshold or still stuck, and targets
only ever got fuller.

The improvement gate (``minImprovementPercent``) applies only to the polish: a planned move is
re-targeted only when the new target narrows the source-target gap by at least that many points.
Relief moves are never gated, so a node full of small CTs can always be brought back under the line.

Maintenance drains are planned after the relief of overloaded nodes (relief is more urgent), largest
CT first, each to the coolest node that stays under the threshold; the improvement gate does not apply.

Every target also honours the moved CT's policy (``spread.py``): never a node its policy weighs 0, never
one its required node affinity excludes, never a move that leaves a DoNotSchedule spread constraint above
``maxSkew`` and worse than before; ScheduleAnyway and preferred affinity rank targets before load. When
only such a rule keeps an overloaded node from being relieved, the refusal is ``SpreadViolation``, not a
silent break of the spread. Last, **spread repair**: a policy whose DoNotSchedule constraint is over-skewed
(a node came back with its CTs, CTs were moved by hand) gets moves from its most crowded domain to a
sparser one, onto targets that stay at or under the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, MigrateContainer
from pve_operator.planning.balancing.eligibility import blocked, managed_by_node, receiving_nodes, refusal
from pve_operator.planning.balancing.inputs import BalancingInput, ManagedCT
from pve_operator.planning.balancing.proposal import Proposal, Refusal, RefusalKind
from pve_operator.planning.balancing.spread import policy_counts, rule_refusal, target_rank
from pve_operator.planning.balancing.state import (
    EPSILON,
    GIB,
    ZERO,
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
from pve_operator.planning.model import ContainerObservation, Metric, UsageMeasure
from pve_operator.planning.topology import SpreadViolation


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
    #: After the greedy relief, lower the pool's peak by local search without adding moves (off: the
    #: greedy result as it is; the benchmark compares both).
    polish: bool = True

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
    """A node being relieved: its figure when the cycle started, what kept CTs from moving, and the
    figure it must get to (``migrateAbove``; lower for a node under pressure)."""

    name: str
    start_fraction: float
    candidates: list[int]
    blocked: list[Refusal]
    limit: float = 1.0
    #: What ``limit`` is measured in: the pool's metric, or the stalled resource for a node under pressure.
    metric: UsageMeasure = Metric.MEMORY
    #: The node's pressure stall share when it is relieved for pressure (not for its figure), else None.
    pressure: float | None = None

    def fraction(self, state: WorkingState) -> float:
        return state.nodes[self.name].fraction(self.metric)


@dataclass
class _Move:
    vmid: int
    source: str
    target: str
    evacuation: bool
    #: Set for a spread repair: why (the constraint, its skew and domains).
    repair: str | None = None


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
        self.moves: list[_Move] = []
        self.refusals: list[Refusal] = []
        self.moved: set[int] = set()
        #: Sources relieved for pressure, with their pressure share (for the reasons).
        self.pressure_sources: dict[str, float] = {}
        #: vmid -> (target, why): a target with room the CT's topology rules refused (SpreadViolation).
        self.rule_refused: dict[int, tuple[str, str]] = {}

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
                if self.inp.sustained_pressure(spec.name):
                    sources.append(self._pressure_source(spec.name))
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
            sources.append(self._source(spec.name, now, drain=False))
        return sources

    def _pressure_source(self, name: str) -> _Source:
        """A node under sustained pressure: relieved by ``reliefPercent`` points of the stalled resource
        (CPU or memory use), whatever the pool's metric; targets still stay under the pool's threshold."""
        trigger = self.inp.thresholds.pressure
        pressure = self.inp.pressure_now(name)
        assert trigger is not None and pressure is not None
        resource = trigger.stalled_metric
        now = self.state.nodes[name].fraction(resource)
        source = self._source(name, now, drain=False)
        source.limit = max(0.0, now - trigger.relief_fraction)
        source.metric = resource
        source.pressure = pressure
        self.pressure_sources[name] = pressure
        return source

    def _source(self, name: str, now: float, *, drain: bool) -> _Source:
        candidates: list[int] = []
        blocked_here: list[Refusal] = []
        for ct, managed in self.by_node.get(name, []):
            if managed.offloaded and not drain:
                continue  # restore owns offloaded CTs; a drain moves them too
            why = blocked(self.inp, ct, managed, cooldown=not drain, migration=True)
            if why is not None:
                blocked_here.append(refusal("Migrate", why, ct.vmid, name))
                continue
            if self.state.load[ct.vmid] == ZERO:
                continue
            candidates.append(ct.vmid)
        return _Source(name, now, candidates, blocked_here, limit=self.limit, metric=self.metric)

    # -- relief of overloaded nodes --------------------------------------------------------------

    def relieve(self, sources: list[_Source]) -> None:
        stuck: set[str] = set()
        while True:
            active = [s for s in sources if s.name not in stuck and above(s.fraction(self.state), s.limit)]
            if not active:
                return
            source = max(active, key=lambda s: (self.state.fraction(s.name), -self.order[s.name]))
            move = self.best_relief(source)
            if move is None:
                stuck.add(source.name)
                continue
            vmid, target = move
            self.move(_Move(vmid, source.name, target, evacuation=False))
            if not above(source.fraction(self.state), source.limit):
                stuck.clear()  # the relieved source is a new target for the stuck ones

    def best_relief(self, source: _Source) -> tuple[int, str] | None:
        state = self.state
        node = state.nodes[source.name]
        now = node.fraction(source.metric)
        excess = now - source.limit + EPSILON
        ranked: list[tuple[bool, float, float, int, float]] = []
        for vmid in source.candidates:
            if vmid in self.moved:
                continue
            load = state.load[vmid]
            after = node.fraction(source.metric, load, -1)
            relief = now - after
            if relief <= EPSILON:
                continue
            cost = self.args.cost(load, state.running[vmid])
            # A CT that clears the whole excess finishes the source in one move: the fewest moves,
            # whichever is cheapest among those. Otherwise the most relief per cost (largest first for
            # CTs of one kind, which needs the fewest moves to cover the excess).
            ranked.append((relief < excess, -min(relief, excess) / cost, cost, vmid, after))
        ranked.sort()
        for _, _, _, vmid, after in ranked:
            target = self.best_target(source, now, after, state.load[vmid], vmid)
            if target is not None:
                return vmid, target
        return None

    def excluded(self, vmid: int, node: str) -> bool:
        """The CT may not go to ``node``: its policy gives it weight 0, or its topology rules refuse it
        (the refusal is kept for the SpreadViolation report)."""
        if node in self.inp.managed[vmid].excluded_nodes:
            return True
        why = rule_refusal(self.inp, self.state, vmid, node)
        if why is not None:
            self.rule_refused.setdefault(vmid, (node, why))
            return True
        return False

    def best_target(self, source: _Source, now: float, after: float, load: Load, vmid: int) -> str | None:
        best: tuple[int, int, float, int, str] | None = None
        for name in self.targets:
            if name == source.name:
                continue
            node = self.state.nodes[name]
            target_after = node.fraction(self.metric, load)
            if above(target_after, self.limit) or not node.fits(load) or self.excluded(vmid, name):
                continue
            # Relief moves are not gated by minImprovementPercent: bringing a node back under the
            # threshold is the point, and small CTs must be able to do it (the gate is for optional moves).
            # The policy's soft rules (ScheduleAnyway, preferred affinity) come before load.
            key = (*target_rank(self.inp, self.state, vmid, name), target_after, self.order[name], name)
            if best is None or key < best:
                best = key
        return best[4] if best is not None else None

    # -- polish: a lower peak for the same number of moves ---------------------------------------

    def polish(self, sources: list[_Source]) -> None:
        """Best-improvement local search on the relief moves: while the pool's most loaded node is the
        source or the target of a move, try that move with a bigger CT from the same source or with
        another target, and keep the change that lowers the peak most. Never adds a move, never takes a
        relieved source back above the threshold or a target above it, keeps the improvement gate
        (measured against the rest of the plan), and never sends a CT to a new node that has moves out
        of it, so every prefix of the plan stays within the thresholds.
        """
        state = self.state
        candidates = {s.name: s.candidates for s in sources}
        pool = [n for n in self.inp.pool_node_names if n in state.nodes and state.nodes[n].online]
        if not pool:
            return
        for _ in range(4 * len(self.moves) + 8):
            outbound = {m.source for m in self.moves}
            fraction = {n: state.fraction(n) for n in pool}
            ranking = sorted(pool, key=lambda n: (-fraction[n], self.order[n]))
            peak_node, peak = ranking[0], fraction[ranking[0]]
            best: tuple[float, float, int, int, str] | None = None
            for index, move in enumerate(self.moves):
                if move.evacuation or peak_node not in (move.source, move.target):
                    continue
                if move.source in self.pressure_sources:
                    continue  # relieved in the stalled resource: a swap chosen on the pool's metric could undo it
                found = self._polish_move(index, move, peak_node, ranking, fraction, outbound, candidates)
                if found is not None and (best is None or found < best):
                    best = found
            if best is None or best[0] >= peak - EPSILON:
                return
            _, _, index, vmid, target = best
            old = self.moves[index]
            state.move(old.vmid, old.source)
            self.moved.discard(old.vmid)
            self.moves[index] = _Move(vmid, old.source, target, evacuation=False)
            state.move(vmid, target)
            self.moved.add(vmid)

    def _polish_move(
        self,
        index: int,
        move: _Move,
        peak_node: str,
        ranking: list[str],
        fraction: dict[str, float],
        outbound: set[str],
        candidates: dict[str, list[int]],
    ) -> tuple[float, float, int, int, str] | None:
        state = self.state
        metric = self.metric
        state.move(move.vmid, move.source)  # undo while evaluating
        try:
            source = state.nodes[move.source]
            source_now = source.fraction(metric)
            bound = self.limit if not above(fraction[move.source], self.limit) else fraction[move.source]
            if peak_node == move.target:
                options = [move.vmid]
            else:
                own_relief = source_now - source.fraction(metric, state.load[move.vmid], -1)
                options = [
                    v
                    for v in candidates.get(move.source, [])
                    if v not in self.moved
                    and source_now - source.fraction(metric, state.load[v], -1) > own_relief + EPSILON
                ]
            old_target_now = state.fraction(move.target)
            best: tuple[float, float, int, int, str] | None = None
            for vmid in options:
                load = state.load[vmid]
                source_after = source.fraction(metric, load, -1)
                if above(source_after, bound):
                    continue
                cost = self.args.cost(load, state.running[vmid])
                for name in self.targets:
                    if name == move.source or (name == move.target and peak_node == move.target):
                        continue
                    if name != move.target and name in outbound:
                        continue
                    node = state.nodes[name]
                    target_now = node.fraction(metric)
                    target_after = node.fraction(metric, load)
                    if above(target_after, self.limit) or not node.fits(load) or self.excluded(vmid, name):
                        continue
                    if (source_now - target_now) - abs(source_after - target_after) < self.min_improvement - EPSILON:
                        continue
                    affected = {move.source, move.target, name}
                    rest = next((fraction[n] for n in ranking if n not in affected), 0.0)
                    new_peak = max(source_after, target_after, rest, old_target_now if name != move.target else 0.0)
                    key = (new_peak, cost, index, vmid, name)
                    if best is None or key < best:
                        best = key
            return best
        finally:
            state.move(move.vmid, move.target)

    # -- maintenance drain -----------------------------------------------------------------------

    def drain(self) -> None:
        for spec in self.inp.pool_nodes:
            node = self.state.nodes.get(spec.name)
            if not spec.maintenance or node is None or not node.online:
                continue
            source = self._source(spec.name, node.fraction(self.metric), drain=True)
            where = f"{'node outside the pool' if spec.outside_pool else 'maintenance node'} {spec.name}"
            self.refusals.extend(
                Refusal(r.kind, r.stage, f"{r.reason}: it stays on {where}", r.vmid, r.node) for r in source.blocked
            )
            now = node.fraction(self.metric)
            sized = sorted(
                source.candidates,
                key=lambda v: (node.fraction(self.metric, self.state.load[v], -1) - now, v),
            )
            for vmid in sized:
                load = self.state.load[vmid]
                best: tuple[int, int, float, int, str] | None = None
                for name in self.targets:
                    target = self.state.nodes[name]
                    target_after = target.fraction(self.metric, load)
                    if name == spec.name or above(target_after, self.limit) or not target.fits(load):
                        continue
                    if self.excluded(vmid, name):
                        continue
                    key = (*target_rank(self.inp, self.state, vmid, name), target_after, self.order[name], name)
                    if best is None or key < best:
                        best = key
                if best is None:
                    ruled = self.rule_refused.get(vmid)
                    self.refusals.append(
                        Refusal(
                            kind=RefusalKind.SPREAD_VIOLATION if ruled else RefusalKind.NO_TARGET,
                            stage="Migrate",
                            vmid=vmid,
                            node=spec.name,
                            reason=(
                                f"CT {vmid} stays on {where}: "
                                + (
                                    f"the node with room ({ruled[0]}) is refused by its policy's placement rules "
                                    f"({ruled[1]})"
                                    if ruled
                                    else "no node has room for it at or under migrateAbovePercent "
                                    f"{threshold_figure(self.limit)}"
                                )
                            ),
                        )
                    )
                    continue
                self.move(_Move(vmid, spec.name, best[4], evacuation=True))

    # -- spread repair ---------------------------------------------------------------------------

    def repair_spread(self) -> None:
        """Bring each policy's DoNotSchedule spread back within maxSkew (a node that failed and came back,
        CTs moved by hand): one CT at a time from the most crowded domain to the least crowded one, onto a
        target that stays at or under the migrate threshold and keeps every rule of the policy. Cooldown,
        pins, locks and operations in flight apply as for relief; a repair that finds no room says so."""
        for policy in sorted({m.policy for m in self.inp.managed.values()}):
            rules = self.inp.topology.get(policy)
            if rules is None or not any(s.hard for s in rules.spread):
                continue
            for _ in range(len(self.inp.managed)):
                violations = rules.violations(policy_counts(self.inp, self.state, policy))
                if not violations:
                    break
                move = self._repair_move(policy, violations[0])
                if move is None:
                    violation = violations[0]
                    self.refusals.append(
                        Refusal(
                            kind=RefusalKind.SPREAD_VIOLATION,
                            stage="Migrate",
                            reason=(
                                f"policy {policy}: topologySpreadConstraints {violation.spread.topology_key} skew "
                                f"{violation.skew} > maxSkew {violation.spread.max_skew} ({violation.crowded} "
                                f"most, {violation.sparse} fewest): no movable CT of the crowded domain fits a "
                                f"node of a sparser one at or under migrateAbovePercent {threshold_figure(self.limit)}"
                            ),
                        )
                    )
                    break
                self.move(move)

    def _repair_move(self, policy: str, violation: SpreadViolation) -> _Move | None:
        rules = self.inp.topology[policy]
        spread = violation.spread
        counts = policy_counts(self.inp, self.state, policy)
        before = rules.skew(spread, counts)
        best: tuple[int, float, float, int, int, str] | None = None
        for vmid, managed in sorted(self.inp.managed.items()):
            source = self.state.location.get(vmid)
            ct = self.inp.snapshot.containers.get(vmid)
            if managed.policy != policy or vmid in self.moved or ct is None or ct.template or managed.offloaded:
                continue
            if source is None or rules.domain_of(spread, source) != violation.crowded:
                continue
            if vmid in self.inp.in_flight.planned_vmids or blocked(self.inp, ct, managed, migration=True):
                continue
            load = self.state.load[vmid]
            for name in self.targets:
                if name == source or rules.domain_of(spread, name) == violation.crowded:
                    continue
                node = self.state.nodes[name]
                target_after = node.fraction(self.metric, load)
                if above(target_after, self.limit) or not node.fits(load):
                    continue
                if name in managed.excluded_nodes or rules.move_refusal(counts, source, name) is not None:
                    continue
                after = dict(counts)
                after[source] -= 1
                after[name] = after.get(name, 0) + 1
                skew = rules.skew(spread, after)
                if skew >= before:
                    continue
                cost = self.args.cost(load, self.state.running[vmid])
                key = (skew, cost, target_after, self.order[name], vmid, name)
                if best is None or key < best:
                    best = key
        if best is None:
            return None
        skew, _, _, _, vmid, target = best
        source = self.state.location[vmid]
        why = (
            f"policy {policy}: topologySpreadConstraints {spread.topology_key} skew {violation.skew} > maxSkew "
            f"{spread.max_skew} ({violation.crowded} most, {violation.sparse} fewest): repair the spread"
        )
        return _Move(vmid, source, target, evacuation=False, repair=why)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _outside_pool(self, name: str) -> bool:
        spec = self.inp.pool_node(name)
        return spec is not None and spec.outside_pool

    def move(self, move: _Move) -> None:
        self.state.move(move.vmid, move.target)
        self.moved.add(move.vmid)
        self.moves.append(move)

    def actions(self) -> tuple[BalanceAction, ...]:
        """The moves as actions, their figures replayed in plan order from the snapshot."""
        replay = WorkingState(self.inp.snapshot, self.metric)
        start = {m.source: replay.fraction(m.source) for m in self.moves}
        trigger = self.inp.thresholds.pressure
        actions: list[BalanceAction] = []
        for move in self.moves:
            ct: ContainerObservation = self.inp.snapshot.containers[move.vmid]
            managed: ManagedCT = self.inp.managed[move.vmid]
            source_before = replay.fraction(move.source)
            target_before = replay.fraction(move.target)
            running = replay.running[move.vmid]
            stalled = trigger.stalled_metric if trigger is not None else self.metric
            stalled_before = replay.nodes[move.source].fraction(stalled)
            replay.move(move.vmid, move.target)
            source_after = replay.fraction(move.source)
            target_after = replay.fraction(move.target)
            if move.repair is not None:
                why = move.repair
            elif move.evacuation and self._outside_pool(move.source):
                why = f"{move.source} is not a node of the pool: bring the CT back"
            elif move.evacuation:
                why = f"{move.source} is in maintenance: drain"
            elif move.source in self.pressure_sources and trigger is not None:
                why = (
                    f"{move.source} {trigger.resource.value} pressure {pct(self.pressure_sources[move.source])} > "
                    f"pressure.abovePercent {threshold_figure(trigger.above_fraction)} for "
                    f"{self.inp.thresholds.sustained_samples} samples: shed "
                    f"{threshold_figure(trigger.relief_fraction)} points of its {trigger.resource.value} use "
                    f"({stalled.value} {pct(stalled_before)} → {pct(replay.nodes[move.source].fraction(stalled))})"
                )
            else:
                why = (
                    f"{move.source} {self.metric.value} {pct(start[move.source])} > migrateAbovePercent "
                    f"{threshold_figure(self.limit)} for {self.inp.thresholds.sustained_samples} samples"
                )
            how = " (restart migration: the CT is down while it moves)" if running else " (stopped migration)"
            actions.append(
                MigrateContainer(
                    vmid=move.vmid,
                    node=move.source,
                    target=move.target,
                    running=running,
                    evacuation=move.evacuation,
                    reason=(
                        f"{why}; CT {move.vmid} ({ct.name or managed.policy}) → {move.target}: {move.source} "
                        f"{pct(source_before)} → {pct(source_after)}, {move.target} {pct(target_before)} → "
                        f"{pct(target_after)}{how}"
                    ),
                    source_percent_before=percent(source_before),
                    source_percent_after=percent(source_after),
                    target_percent_before=percent(target_before),
                    target_percent_after=percent(target_after),
                )
            )
        return tuple(actions)

    def explain_stuck(self, sources: list[_Source]) -> None:
        for source in sources:
            now = source.fraction(self.state)
            if not above(now, source.limit):
                continue
            if source.pressure is not None:
                self.refusals.append(
                    Refusal(
                        kind=RefusalKind.NO_TARGET,
                        stage="Migrate",
                        node=source.name,
                        reason=(
                            f"{source.name} stays under pressure ({pct(source.pressure)} stalled): no node without "
                            f"pressure has room for a movable CT at or under migrateAbovePercent "
                            f"{threshold_figure(self.limit)}"
                            + (f"; {len(source.blocked)} CT(s) not movable" if source.blocked else "")
                        ),
                    )
                )
                self.refusals.extend(source.blocked)
                continue
            kind = RefusalKind.NO_TARGET
            detail = (
                f"no node has room for any movable CT at or under migrateAbovePercent {threshold_figure(self.limit)}"
            )
            ruled = next(((v, self.rule_refused[v]) for v in source.candidates if v in self.rule_refused), None)
            ruled_vmid: int | None = None
            if ruled is not None:
                vmid, (target, why) = ruled
                ruled_vmid = vmid  # on the CT, so status.recentActions records it (Refused: SpreadViolation)
                kind = RefusalKind.SPREAD_VIOLATION
                detail = (
                    f"moving CT {vmid} to {target}, which has room, would break its policy's placement rules "
                    f"({why}); "
                    "the spread is kept (raise maxSkew or use ScheduleAnyway to let relief win)"
                )
            if source.blocked:
                detail += f"; {len(source.blocked)} CT(s) not movable (see their refusals)"
            self.refusals.append(
                Refusal(
                    kind=kind,
                    stage="Migrate",
                    vmid=ruled_vmid,
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
    if args.polish:
        planner.polish(sources)
        planner.relieve(sources)  # room the polish freed may unstick a source
    planner.explain_stuck(sources)
    if args.drain_maintenance:
        planner.drain()
    planner.repair_spread()
    return Proposal(actions=planner.actions(), refusals=tuple(planner.refusals))


def propose_drains(inp: BalancingInput, args: RebalanceArgs) -> Proposal:
    """Only the maintenance drains of :func:`propose` (``level`` plans the relief its own way when
    this strategy's relief leaves a node above the threshold)."""
    planner = _Planner(inp, args)
    if args.drain_maintenance:
        planner.drain()
    planner.repair_spread()
    return Proposal(actions=planner.actions(), refusals=tuple(planner.refusals))


STRATEGY = Strategy(
    name="rebalance",
    stage="Migrate",
    args_type=RebalanceArgs,
    propose_fn=propose,
    description="Migrate CTs off nodes that stay above migrateAbovePercent, never taking a target above it; "
    "drain maintenance nodes.",
)

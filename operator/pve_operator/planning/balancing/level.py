"""``level``: the Level objective: relieve like ``rebalance``, then lower the pool's peak with few moves.

Relieve (``rebalance``) only acts on nodes above ``migrateAbovePercent`` and leaves the band under it
alone. Level goes on from the state the relief leaves (relief first: nodes above the threshold and
maintenance drains are handled exactly as ``rebalance`` does, with its cost model and polish) and
minimises the peak utilisation of the pool's nodes in the pool's metric:

1. **Local search with exact evaluation** on the projected state (:class:`WorkingState`), one step at
   a time off the hottest levelled node:

   * a *move*: among its movable CTs, each with the target that is coolest after the move (online pool
     node, not in maintenance, weight > 0, not excluded by the CT's policy, physically fits, at or under
     ``migrateAbovePercent`` after the move), the one that lowers the pair's peak ``max(source after,
     target after)`` most per cost (``rebalance``'s cost: one migration, the restart of a running CT,
     the gigabytes of memory and disk to copy);
   * when no move qualifies: a *swap* (a CT for a smaller one of a cool node, in the order that keeps
     both steps within the rules), a *chain* (up to ``CHAIN_MOVES`` CTs leave a cool node for others,
     then a CT of the hottest node takes their place) or a *batch* (several CTs to one target: big
     nodes full of small CTs).

   A step must lower the pair's peak and narrow the source-target gap by ``minGainPercent`` points
   (not gated off a node above the threshold: relief never is; there a step that clears the node ranks
   first). Apply it, record the pool's peak, repeat until the hottest node has no step (or
   ``max_moves``).
2. **Shortest good prefix**: the recorded peaks never rise; with ``best`` the lowest, the plan keeps
   the steps up to the first point whose peak is at most ``best * (1 + levelTolerancePercent / 100)``
   (and at or under the threshold when ``best`` is). The tail buys the last few percent with many
   restarts; it is dropped.

When ``rebalance``'s relief leaves a node above the threshold, the search is also run from the drains'
result alone (its chains can make room for a big CT no single move places) and the better plan is kept.

Eligibility is ``rebalance``'s: pinned, locked, in-flight, unknown-state, offloaded, cooling-down and
backing-off CTs never move, nor does a CT already moved in this plan; CTs never go to nodes their
policy excludes. Every move is checked on the state the moves before it leave, so no prefix of the
plan takes a target above ``migrateAbovePercent`` or beyond its memory or disk (``limits.py`` then
spreads the plan over cycles and orders arrivals after the departures that make their room).

Levelled nodes: online pool nodes not in maintenance. A node above the threshold for fewer than
``sustainedSamples`` samples is a spike: it is neither a source nor counted in the peak. While the
hottest node has no step (its CTs pinned, locked, in cooldown, or nowhere with room), nothing lowers
the peak and nothing is levelled; nor while a maintenance drain finds no room.

A fixed point: the search is a function of the state and of the CTs it may not move; planning again on
the plan's result (the moved CTs in cooldown) continues the same search from the kept prefix, finds
the same best peak, and the result is already within the tolerance: nothing is planned.
"""

from __future__ import annotations

from dataclasses import dataclass

from pve_operator.planning.actions import BalanceAction, MigrateContainer
from pve_operator.planning.balancing import rebalance
from pve_operator.planning.balancing.eligibility import blocked, managed_by_node, receiving_nodes
from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.proposal import Proposal, RefusalKind
from pve_operator.planning.balancing.spread import target_refusal
from pve_operator.planning.balancing.state import (
    EPSILON,
    GIB,
    ZERO,
    Load,
    WorkingState,
    above,
    pct,
    percent,
    sustained_above,
)
from pve_operator.planning.balancing.strategy import Strategy
from pve_operator.planning.model import Metric, WeightedMetric

#: Coolest nodes a swap or a batch is tried with.
SEARCH_TARGETS = 4
#: A swap is tried with this many of the hottest node's largest CTs and of each target's smallest.
SWAP_CANDIDATES = 32
#: Most CTs in one batch.
BATCH_MOVES = 16
#: Most CTs that leave a node to make room for one CT of the hottest node.
CHAIN_MOVES = 4


@dataclass(frozen=True)
class LevelArgs:
    """The move cost (as ``rebalance``'s, which the relief uses too) and a cap on the levelling moves."""

    migration_cost: float = 1.0
    restart_cost: float = 1.0
    memory_cost_per_gib: float = 1 / 16
    disk_cost_per_gib: float = 1 / 256
    #: Drain maintenance nodes in the relief (as ``rebalance``).
    drain_maintenance: bool = True
    #: Polish the relief moves (as ``rebalance``).
    polish: bool = True
    #: Most levelling moves searched in one plan (the kept prefix is usually far shorter).
    max_moves: int = 1000

    def __post_init__(self) -> None:
        if self.max_moves < 0:
            raise ValueError(f"max_moves must not be negative, got {self.max_moves}")
        self.relief_args()  # validates the cost weights

    def relief_args(self) -> rebalance.RebalanceArgs:
        return rebalance.RebalanceArgs(
            migration_cost=self.migration_cost,
            restart_cost=self.restart_cost,
            memory_cost_per_gib=self.memory_cost_per_gib,
            disk_cost_per_gib=self.disk_cost_per_gib,
            drain_maintenance=self.drain_maintenance,
            polish=self.polish,
        )

    def cost(self, load: Load, running: bool) -> float:
        return (
            self.migration_cost
            + (self.restart_cost if running else 0.0)
            + self.memory_cost_per_gib * load.memory_bytes / GIB
            + self.disk_cost_per_gib * load.disk_bytes / GIB
        )


@dataclass(frozen=True)
class _Move:
    vmid: int
    source: str
    target: str


class _Leveller:
    def __init__(self, inp: BalancingInput, args: LevelArgs, relief: tuple[BalanceAction, ...]) -> None:
        self.inp = inp
        self.args = args
        self.metric = inp.thresholds.metric
        self.limit = inp.thresholds.migrate_above_fraction
        self.min_gain = inp.limits.min_gain_fraction
        self.relief = relief
        self.state = WorkingState(inp.snapshot, self.metric)
        for action in relief:
            self.state.apply(action)
        self.moved = {a.vmid for a in relief}
        self.order = {spec.name: i for i, spec in enumerate(inp.pool_nodes)}
        self.levelled = self._levelled_nodes()
        self.targets = receiving_nodes(inp, self.state)
        nodes = [self.state.nodes[n] for n in self.targets]
        self.smallest = (
            min((n.cores for n in nodes), default=0.0),
            min((n.mem_total for n in nodes), default=0),
            min((n.disk_total for n in nodes), default=0),
        )
        self.candidates = self._candidates()

    def _levelled_nodes(self) -> list[str]:
        thresholds = self.inp.thresholds
        nodes = []
        for spec in self.inp.pool_nodes:
            node = self.state.nodes.get(spec.name)
            if node is None or not node.online or spec.maintenance or spec.outside_pool:
                continue
            if above(node.fraction(self.metric), self.limit) and not sustained_above(
                self.inp.history.get(spec.name), thresholds.sustained_samples, self.limit
            ):
                continue  # a spike: waited out, as rebalance does
            nodes.append(spec.name)
        return nodes

    def _candidates(self) -> dict[str, list[int]]:
        """Movable CTs of ours per levelled node, by vmid (``rebalance``'s rules for relief moves)."""
        by_node = managed_by_node(self.inp, self.state)
        result: dict[str, list[int]] = {}
        for name in self.levelled:
            movable = []
            for ct, managed in by_node.get(name, []):
                if ct.vmid in self.moved or managed.offloaded:
                    continue
                if blocked(self.inp, ct, managed, cooldown=True, migration=True) is not None:
                    continue
                if self.state.load[ct.vmid] == ZERO:
                    continue
                movable.append(ct.vmid)
            result[name] = movable
        return result

    def _refused(self, vmid: int, node: str) -> bool:
        """The CT's policy keeps it off ``node`` (weight 0, node affinity, DoNotSchedule spread)."""
        return target_refusal(self.inp, self.state, vmid, node) is not None

    def peak(self) -> tuple[float, str] | None:
        if not self.levelled:
            return None
        fraction, _, name = max((self.state.fraction(n), -self.order[n], n) for n in self.levelled)
        return fraction, name

    def search(self) -> tuple[list[_Move], list[tuple[int, float]]]:
        """Steps off the hottest node while one lowers it by the gain. Returns the moves and, after each
        step (one move, a swap, or a batch to one target), how many moves so far and the pool's peak."""
        moves: list[_Move] = []
        found = self.peak()
        if found is None:
            return moves, []
        points = [(0, found[0])]
        while len(moves) < self.args.max_moves:
            peak, source = found
            step = self._step(source, peak)
            if step is None:
                break
            for move in step:
                self.state.move(move.vmid, move.target)
                self.moved.add(move.vmid)
                moves.append(move)
            found = self.peak()
            assert found is not None
            points.append((len(moves), found[0]))
        return moves, points

    def _short(self, now: float, after: float) -> bool:
        """A step off a node above the threshold that leaves it above: steps that clear it rank first."""
        return above(now, self.limit) and above(after, self.limit)

    def _clears(self, source: str, step: list[_Move]) -> bool:
        node = self.state.nodes[source]
        delta = [
            (self.state.load[m.vmid], -1 if m.source == source else 1) for m in step if source in (m.source, m.target)
        ]
        for load, sign in delta:
            node.add(load, sign)
        after = node.fraction(self.metric)
        for load, sign in delta:
            node.add(load, -sign)
        return not above(after, self.limit)

    def _largest_relief(self, source: str, now: float) -> float:
        node = self.state.nodes[source]
        return max((now - node.fraction(self.metric, self.state.load[v], -1) for v in self._free(source)), default=0.0)

    def _step(self, source: str, now: float) -> list[_Move] | None:
        """The next step off ``source``: the best single move; for a node above the threshold, a swap or a
        chain that clears it when the move does not (and one CT could: the excess is within reach);
        otherwise a swap, a chain or a batch when no single move qualifies."""
        step = self.best_move(source, now)
        if (
            above(now, self.limit)
            and not (step and self._clears(source, step))
            and self._largest_relief(source, now) >= now - self.limit - EPSILON
        ):
            for alternative in (self.best_swap(source, now), self.best_chain(source, now)):
                if alternative and self._clears(source, alternative):
                    return alternative
        if step:
            return step
        if above(now, self.limit) or self._one_ct_can_gain(source):
            step = self.best_swap(source, now) or self.best_chain(source, now)
        return step or self.best_batch(source, now)

    def _one_ct_can_gain(self, source: str) -> bool:
        """Whether moving one CT of ``source`` could narrow a gap by ``minGainPercent`` at all (its relief
        plus what it adds to the target that grows least): otherwise only a batch can, and swaps and
        chains (one CT of the source each) are not worth trying."""
        state = self.state
        node = state.nodes[source]
        now = node.fraction(self.metric)
        largest = self._by_size(source)[:1]
        if not largest:
            return False
        load = state.load[largest[0]]
        relief = now - node.fraction(self.metric, load, -1)
        added = max(
            (state.nodes[n].fraction(self.metric, load) - state.fraction(n) for n in self.targets if n != source),
            default=0.0,
        )
        return relief + added >= self.min_gain - EPSILON

    def _free(self, node: str) -> list[int]:
        return [v for v in self.candidates.get(node, []) if v not in self.moved]

    def _gain_ok(self, now: float, target_now: float, source_after: float, target_after: float) -> bool:
        """The step lowers the pair's peak and narrows the source-target gap by ``minGainPercent`` (not
        gated when the source is above the threshold: relief, as ``rebalance``'s, is never gated)."""
        if max(source_after, target_after) >= now - EPSILON:
            return False
        if above(now, self.limit):
            return True
        return (now - target_now) - abs(source_after - target_after) >= self.min_gain - EPSILON

    def best_move(self, source: str, now: float) -> list[_Move] | None:
        """One CT off ``source`` to the target coolest after it, most pair-peak drop per cost first."""
        state = self.state
        metric = self.metric
        node = state.nodes[source]
        by_fraction = sorted((state.fraction(n), self.order[n], n) for n in self.targets if n != source)
        gated = not above(now, self.limit)
        best: tuple[bool, float, float, int, int, str] | None = None
        for vmid in self._free(source):
            load = state.load[vmid]
            after = node.fraction(metric, load, -1)
            if now - after <= EPSILON:
                continue
            if gated and now - after + self._max_added(load) < self.min_gain - EPSILON:
                continue  # too small to narrow any gap by minGainPercent
            target: tuple[float, float, int, str] | None = None  # (target after, target now, order, name)
            for target_now, order, name in by_fraction:
                if target is not None and target_now >= target[0]:
                    break  # a target only gets fuller: none further on ends cooler
                if self._refused(vmid, name):
                    continue
                candidate = state.nodes[name]
                target_after = candidate.fraction(metric, load)
                if above(target_after, self.limit) or not candidate.fits(load):
                    continue
                if not self._gain_ok(now, target_now, after, target_after):
                    continue
                if target is None or target_after < target[0] - EPSILON:
                    target = (target_after, target_now, order, name)
            if target is None:
                continue
            target_after, target_now, order, name = target
            cost = self.args.cost(load, state.running[vmid])
            key = (self._short(now, after), -(now - max(after, target_after)) / cost, cost, vmid, order, name)
            if best is None or key < best:
                best = key
        return [_Move(best[3], source, best[5])] if best is not None else None

    def _max_added(self, load: Load) -> float:
        """An upper bound of what ``load`` adds to any target's figure (over the smallest capacities)."""
        cores, memory, disk = self.smallest
        parts = {
            Metric.CPU: load.cpu_cores / cores if cores > 0 else 1.0,
            Metric.MEMORY: load.memory_bytes / memory if memory > 0 else 1.0,
            Metric.DISK: load.disk_bytes / disk if disk > 0 else 1.0,
        }
        if isinstance(self.metric, WeightedMetric):
            return self.metric.combine(parts[Metric.MEMORY], parts[Metric.CPU], parts[Metric.DISK])
        return max(parts.values()) if self.metric is Metric.MAX else parts[self.metric]

    def _by_size(self, node: str) -> list[int]:
        """The node's free candidates, the most relief first."""
        state = self.state
        here = state.nodes[node]
        return sorted(self._free(node), key=lambda v: (here.fraction(self.metric, state.load[v], -1), v))

    def _coolest(self, source: str) -> list[str]:
        ranked = sorted((self.state.fraction(n), self.order[n], n) for n in self.targets if n != source)
        return [name for _, _, name in ranked[:SEARCH_TARGETS]]

    def best_swap(self, source: str, now: float) -> list[_Move] | None:
        """A CT off ``source`` for a smaller one of a cool node: finer than a move when the hottest node's
        CTs are all too big for any target. The order of the two moves keeps every step within the rules."""
        if source not in self.targets:
            return None  # weight 0, or no capacity known: a swap would move a CT *into* it
        state = self.state
        metric = self.metric
        node = state.nodes[source]
        mine = self._by_size(source)[:SWAP_CANDIDATES]
        best: tuple[bool, float, float, int, int, str, bool] | None = None
        for name in self._coolest(source):
            other = state.nodes[name]
            target_now = other.fraction(metric)
            theirs = [v for v in self._by_size(name) if not self._refused(v, source)]
            theirs = theirs[-SWAP_CANDIDATES:]
            for a in mine:
                if self._refused(a, name):
                    continue
                load_a = state.load[a]
                a_first = not above(other.fraction(metric, load_a), self.limit) and other.fits(load_a)
                cost_a = self.args.cost(load_a, state.running[a])
                for b in theirs:
                    load_b = state.load[b]
                    if not a_first and (above(node.fraction(metric, load_b), self.limit) or not node.fits(load_b)):
                        continue  # neither order keeps the intermediate state within the rules
                    node.add(load_a, -1)
                    node.add(load_b)
                    other.add(load_b, -1)
                    other.add(load_a)
                    after, target_after = node.fraction(metric), other.fraction(metric)
                    fits = node.fits(ZERO) and other.fits(ZERO)
                    node.add(load_b, -1)
                    node.add(load_a)
                    other.add(load_a, -1)
                    other.add(load_b)
                    if not fits or above(after, self.limit) or above(target_after, self.limit):
                        continue
                    if not self._gain_ok(now, target_now, after, target_after):
                        continue
                    cost = cost_a + self.args.cost(load_b, state.running[b])
                    drop = now - max(after, target_after)
                    key = (self._short(now, after), -drop / cost, cost, a, b, name, a_first)
                    if best is None or key < best:
                        best = key
        if best is None:
            return None
        _, _, _, a, b, name, a_first = best
        there, back = _Move(a, source, name), _Move(b, name, source)
        return [there, back] if a_first else [back, there]

    def best_chain(self, source: str, now: float) -> list[_Move] | None:
        """Make room first: up to ``CHAIN_MOVES`` CTs leave a cool node for other nodes, then a CT of
        ``source`` takes their place (each move checked on the state the ones before it leave)."""
        state = self.state
        metric = self.metric
        node = state.nodes[source]
        best: tuple[bool, float, float, int, str, tuple[tuple[int, str], ...]] | None = None
        for name in self._coolest(source):
            other = state.nodes[name]
            target_now = other.fraction(metric)
            theirs = self._by_size(name)
            for a in self._by_size(source)[:SWAP_CANDIDATES]:
                load_a = state.load[a]
                if self._refused(a, name):
                    continue
                after = node.fraction(metric, load_a, -1)
                if after >= now - EPSILON:
                    continue
                made: list[tuple[int, str]] = []
                try:
                    for b in theirs:
                        if not above(other.fraction(metric, load_a), self.limit) and other.fits(load_a):
                            break
                        if len(made) >= CHAIN_MOVES:
                            break
                        load_b = state.load[b]
                        onward = self._room_for(b, load_b, exclude=(source, name))
                        if onward is None or state.nodes[onward].fraction(metric, load_b) >= now - EPSILON:
                            continue
                        state.move(b, onward)
                        made.append((b, onward))
                    if not made:
                        continue  # no room to make: a plain move or swap would have found it
                    target_after = other.fraction(metric, load_a)
                    if above(target_after, self.limit) or not other.fits(load_a):
                        continue
                    if not self._gain_ok(now, target_now, after, target_after):
                        continue
                    cost = self.args.cost(load_a, state.running[a]) + sum(
                        self.args.cost(state.load[b], state.running[b]) for b, _ in made
                    )
                    drop = now - max(after, target_after)
                    key = (self._short(now, after), -drop / cost, cost, a, name, tuple(made))
                    if best is None or key < best:
                        best = key
                finally:
                    for b, _ in reversed(made):
                        state.move(b, name)
        if best is None:
            return None
        _, _, _, a, name, made_room = best
        return [*(_Move(b, name, onward) for b, onward in made_room), _Move(a, source, name)]

    def _room_for(self, vmid: int, load: Load, exclude: tuple[str, ...]) -> str | None:
        """The target coolest after receiving the CT, at or under the threshold, or None."""
        best: tuple[float, int, str] | None = None
        for name in self.targets:
            if name in exclude or self._refused(vmid, name):
                continue
            node = self.state.nodes[name]
            after = node.fraction(self.metric, load)
            if above(after, self.limit) or not node.fits(load):
                continue
            key = (after, self.order[name], name)
            if best is None or key < best:
                best = key
        return best[2] if best is not None else None

    def best_batch(self, source: str, now: float) -> list[_Move] | None:
        """Several CTs off ``source`` to one target, largest first, until together they narrow the gap by
        ``minGainPercent``: the hottest node may be big and its CTs small."""
        state = self.state
        metric = self.metric
        node = state.nodes[source]
        largest = self._by_size(source)
        best: tuple[float, list[int], str] | None = None
        for name in self._coolest(source):
            other = state.nodes[name]
            target_now = other.fraction(metric)
            chosen: list[int] = []
            cost = 0.0
            done = False
            for vmid in largest:
                load = state.load[vmid]
                if not other.fits(load) or self._refused(vmid, name):
                    continue
                after, target_after = node.fraction(metric, load, -1), other.fraction(metric, load)
                if above(target_after, self.limit) or target_after > after or after >= node.fraction(metric):
                    continue
                node.add(load, -1)
                other.add(load)
                chosen.append(vmid)
                cost += self.args.cost(load, state.running[vmid])
                if self._gain_ok(now, target_now, after, target_after):
                    done = True
                    break
                if len(chosen) >= BATCH_MOVES:
                    break
            drop = now - max(node.fraction(metric), other.fraction(metric))
            for vmid in chosen:
                node.add(state.load[vmid])
                other.add(state.load[vmid], -1)
            if done and (best is None or drop / cost > best[0] + EPSILON):
                best = (drop / cost, chosen, name)
        if best is None:
            return None
        return [_Move(vmid, source, best[2]) for vmid in best[1]]

    def actions(self, moves: list[_Move], best_peak: float) -> tuple[BalanceAction, ...]:
        """The kept moves as actions, their figures replayed in plan order from the relief's result."""
        replay = WorkingState(self.inp.snapshot, self.metric)
        for action in self.relief:
            replay.apply(action)
        actions: list[BalanceAction] = []
        for move in moves:
            ct = self.inp.snapshot.containers[move.vmid]
            peak_before = max(replay.fraction(n) for n in self.levelled)
            source_before = replay.fraction(move.source)
            target_before = replay.fraction(move.target)
            running = replay.running[move.vmid]
            replay.move(move.vmid, move.target)
            source_after = replay.fraction(move.source)
            target_after = replay.fraction(move.target)
            name = ct.name or self.inp.managed[move.vmid].policy
            how = " (restart migration: the CT is down while it moves)" if running else " (stopped migration)"
            actions.append(
                MigrateContainer(
                    vmid=move.vmid,
                    node=move.source,
                    target=move.target,
                    running=running,
                    evacuation=False,
                    reason=(
                        f"objective Level: {move.source} {self.metric.value} {pct(source_before)} is the pool's peak "
                        f"({pct(peak_before)}; the plan levels it to {pct(best_peak)} or within "
                        f"levelTolerancePercent of it); CT {move.vmid} ({name}) "
                        f"→ {move.target}: {move.source} {pct(source_before)} → {pct(source_after)}, {move.target} "
                        f"{pct(target_before)} → {pct(target_after)}{how}"
                    ),
                    source_percent_before=percent(source_before),
                    source_percent_after=percent(source_after),
                    target_percent_before=percent(target_before),
                    target_percent_after=percent(target_after),
                )
            )
        return tuple(actions)


def shortest_good_prefix(points: list[tuple[int, float]], tolerance: float, limit: float) -> int:
    """How many moves to keep: those up to the first step whose peak is within ``tolerance`` (relative)
    of the best, and at or under ``limit`` when the best is (relief is never cut short).
    ``points``: (moves so far, peak) after each step, the start first."""
    if not points:
        return 0
    best = min(peak for _, peak in points)
    bound = best if above(best, limit) else min(best * (1 + tolerance), max(best, limit))
    return next(count for count, peak in points if peak <= bound + EPSILON)


@dataclass(frozen=True)
class _Result:
    proposal: Proposal
    above: int
    peak: float
    moves: int

    def better_than(self, other: _Result) -> bool:
        return (self.above, self.peak, self.moves) < (other.above, other.peak - EPSILON, other.moves)


def _level(inp: BalancingInput, args: LevelArgs, first: Proposal) -> _Result:
    """``first`` (relief or drains), then the kept prefix of the levelling search from its result.
    While a maintenance drain finds no room, nothing is levelled: the room levelling frees is the
    drain's next cycle (and planning again on the result would then drain and level differently)."""
    leveller = _Leveller(inp, args, first.actions)
    start = leveller.state
    drain_stuck = any(r.kind is RefusalKind.NO_TARGET and r.vmid is not None for r in first.refusals)
    moves, points = ([], []) if drain_stuck else leveller.search()
    keep = shortest_good_prefix(points, inp.limits.level_tolerance_fraction, leveller.limit)
    best = min((peak for _, peak in points), default=0.0)
    for move in reversed(moves[keep:]):
        start.move(move.vmid, move.source)
    fractions = [start.fraction(n) for n in leveller.levelled]
    return _Result(
        proposal=Proposal(actions=first.actions + leveller.actions(moves[:keep], best), refusals=first.refusals),
        above=sum(above(f, leveller.limit) for f in fractions),
        peak=max(fractions, default=0.0),
        moves=len(first.actions) + keep,
    )


def propose(inp: BalancingInput, args: LevelArgs) -> Proposal:
    """``rebalance``'s relief and drains, then the shortest prefix of the levelling search that gets
    within ``levelTolerancePercent`` of the lowest peak it finds. When that leaves a node above the
    threshold, the search alone (its steps off an overloaded node are not gated, and it can make room
    on a target first) is tried from the drains' result too, and the better plan is kept."""
    relieved = _level(inp, args, rebalance.propose(inp, args.relief_args()))
    if not relieved.above:
        return relieved.proposal
    drains = rebalance.propose_drains(inp, args.relief_args())
    searched = _level(inp, args, drains)
    if not searched.better_than(relieved):
        return relieved.proposal
    cleared = {r.node for r in relieved.proposal.refusals if r.kind is RefusalKind.NO_TARGET and r.vmid is None}
    refusals = tuple(
        r
        for r in relieved.proposal.refusals
        if r.kind is RefusalKind.NOT_SUSTAINED or (r.node not in cleared and r not in drains.refusals)
    )
    return Proposal(actions=searched.proposal.actions, refusals=drains.refusals + refusals)


STRATEGY = Strategy(
    name="level",
    stage="Migrate",
    args_type=LevelArgs,
    propose_fn=propose,
    description="Objective Level: relieve like rebalance, then lower the pool's peak with the fewest moves "
    "that get within levelTolerancePercent of the lowest peak found.",
)

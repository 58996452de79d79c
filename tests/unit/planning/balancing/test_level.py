"""The Level objective (``level.py``): it levels, it keeps every rule, it is a fixed point, Relieve is unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hypothesis import assume, given

from pve_operator.api.v1alpha1.serverpool import BalancingObjective as ApiObjective
from pve_operator.api.v1alpha1.serverpool import BalancingSpec
from pve_operator.planning.actions import MigrateContainer, RestoreContainer
from pve_operator.planning.balancing import (
    BalancePlan,
    BalancingInput,
    BalancingLimits,
    BalancingObjective,
    LevelArgs,
    ManagedCT,
    PoolNodeSpec,
    Thresholds,
    get_strategy,
    objective,
    plan_balance,
)
from pve_operator.planning.balancing.level import STRATEGY as LEVEL
from pve_operator.planning.balancing.level import shortest_good_prefix
from pve_operator.planning.balancing.state import WorkingState
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, ContainerStatus, Metric, NodeUsage
from tests.unit.planning.balancing.test_properties import PROPERTIES, clusters, next_cycle, receiving, unlimited

GIB = 1024**3
NOW = 1_000_000.0


def _level(inp: BalancingInput) -> BalancingInput:
    return replace(inp, limits=replace(inp.limits, objective=BalancingObjective.LEVEL))


def pool(
    nodes: Sequence[tuple[str, float, float]],
    cts: Sequence[tuple[int, str, float]],
    *,
    managed: dict[int, ManagedCT] | None = None,
    locked: frozenset[int] = frozenset(),
    limits: BalancingLimits | None = None,
) -> BalancingInput:
    """Nodes ``(name, memory GiB, host GiB)`` and running CTs ``(vmid, node, memory GiB)``, all ours
    unless ``managed`` says otherwise; memory metric, the CRD's thresholds, steady histories."""
    observations = [
        ContainerObservation(
            vmid=vmid,
            node=node,
            status=ContainerStatus.RUNNING,
            name=f"ct{vmid}",
            lock="backup" if vmid in locked else None,
            cpu_cores=1,
            cpu_used_fraction=0.1,
            memory_limit_bytes=int(gib * 2 * GIB),
            memory_used_bytes=int(gib * GIB),
            disk_limit_bytes=16 * GIB,
            disk_used_bytes=4 * GIB,
        )
        for vmid, node, gib in cts
    ]
    usages = [
        NodeUsage(
            name=name,
            online=True,
            cpu_cores=16,
            cpu_used_fraction=0.1,
            memory_total_bytes=int(total * GIB),
            memory_used_bytes=int(host * GIB) + sum(c.memory_used_bytes for c in observations if c.node == name),
            disk_total_bytes=1000 * GIB,
            disk_used_bytes=100 * GIB,
        )
        for name, total, host in nodes
    ]
    snapshot = ClusterSnapshot.of(NOW, usages, observations)
    thresholds = Thresholds()
    return BalancingInput(
        snapshot=snapshot,
        pool_nodes=tuple(PoolNodeSpec(name) for name, _, _ in nodes),
        managed=managed
        if managed is not None
        else {vmid: ManagedCT(vmid, "web", 100, "2026-01-01T00:00:00Z") for vmid, _, _ in cts},
        history={u.name: [u.used_fraction(Metric.MEMORY)] * thresholds.sustained_samples for u in usages},
        now=NOW,
        thresholds=thresholds,
        limits=limits or BalancingLimits(max_concurrent_migrations=100, max_inbound_per_target=100),
    )


def skewed() -> BalancingInput:
    """Three 64 GiB nodes at 72 %, 66 % and 9 %: nothing is above 75 %, so Relieve does nothing."""
    cts = [(100 + i, "a", 4.0) for i in range(11)] + [(200 + i, "b", 4.0) for i in range(10)]
    return pool([("a", 64, 2), ("b", 64, 2), ("c", 64, 6)], cts)


def peak(inp: BalancingInput, snapshot: ClusterSnapshot) -> float:
    return max(snapshot.nodes[n].used_fraction(inp.thresholds.metric) for n in inp.pool_node_names)


def test_level_levels_a_skewed_pool_that_relieve_leaves_alone() -> None:
    inp = skewed()
    assert plan_balance(inp).actions == ()
    plan = plan_balance(_level(inp))
    assert plan.actions and all(isinstance(a, MigrateContainer) and a.target == "c" for a in plan.actions)
    assert peak(inp, plan.projected) < peak(inp, inp.snapshot) - 0.1
    # Within levelTolerancePercent of the level a perfect spread reaches (~49 %), with few moves.
    assert peak(inp, plan.projected) <= 0.49 * 1.05 + 0.02
    assert len(plan.actions) <= 8
    assert all("objective Level" in a.reason and "restart migration" in a.reason for a in plan.actions)


def test_the_tolerance_trades_the_last_points_for_fewer_moves() -> None:
    inp = _level(skewed())
    exact = plan_balance(replace(inp, limits=replace(inp.limits, level_tolerance_fraction=0.0)))
    tolerant = plan_balance(inp)
    assert len(tolerant.actions) <= len(exact.actions)
    assert peak(inp, tolerant.projected) <= peak(inp, exact.projected) * 1.05 + 1e-9


def test_a_pool_already_level_within_the_tolerance_plans_nothing() -> None:
    inp = pool([("a", 64, 2), ("b", 64, 2)], [(100 + i, "a", 4.0) for i in range(8)] + [(200, "b", 28.0)])
    assert plan_balance(_level(inp)).actions == ()


def test_min_gain_keeps_small_cts_where_they_are() -> None:
    cts = [(100 + i, "a", 0.5) for i in range(80)]  # 0.8 points of a 64 GiB node each
    inp = _level(pool([("a", 64, 2), ("b", 64, 2)], cts))
    assert plan_balance(replace(inp, limits=replace(inp.limits, min_gain_fraction=0.05))).actions != ()
    # With a gain of 5 points a batch of CTs moves together; with 100 points nothing qualifies.
    assert plan_balance(replace(inp, limits=replace(inp.limits, min_gain_fraction=1.0))).actions == ()


def test_level_respects_pins_locks_cooldown_and_excluded_nodes() -> None:
    inp = _level(skewed())
    vmids = list(inp.managed)
    everything_held = {
        v: replace(
            m,
            pinned=v % 3 == 0,
            last_action_at=NOW - 60 if v % 3 == 1 else None,
            excluded_nodes=frozenset({"c"}),
        )
        for v, m in inp.managed.items()
    }
    held = replace(inp, managed=everything_held)
    assert plan_balance(held).actions == ()
    locked = pool(
        [("a", 64, 2), ("b", 64, 2), ("c", 64, 6)],
        [(100 + i, "a", 4.0) for i in range(11)] + [(200 + i, "b", 4.0) for i in range(10)],
        locked=frozenset(vmids),
        limits=inp.limits,
    )
    assert plan_balance(locked).actions == ()
    # Half of a's CTs pinned, the other half in cooldown or excluded from c: only those free to go, go.
    some_held = replace(
        inp,
        managed={
            v: replace(
                m,
                pinned=v in (100, 102, 104, 106),
                last_action_at=NOW - 60 if v in (101, 103) else None,
                excluded_nodes=frozenset({"c"}) if v == 105 else frozenset(),
            )
            for v, m in inp.managed.items()
        },
    )
    plan = plan_balance(some_held)
    assert plan.actions and {a.vmid for a in plan.actions if a.node == "a"} <= {107, 108, 109, 110}
    # The hottest node cannot shed anything: nothing lowers the pool's peak, so nothing is levelled.
    all_of_a_pinned = replace(inp, managed={v: replace(m, pinned=v < 200) for v, m in inp.managed.items()})
    assert plan_balance(all_of_a_pinned).actions == ()


def test_level_relieves_first_like_relieve() -> None:
    cts = [(100 + i, "a", 4.0) for i in range(13)] + [(200 + i, "b", 4.0) for i in range(6)]
    inp = pool([("a", 64, 2), ("b", 64, 2), ("c", 64, 2)], cts)  # a at 84 %: above 75 %
    relieve = plan_balance(inp)
    level = plan_balance(_level(inp))
    assert relieve.actions and level.actions
    assert level.actions[: len(relieve.actions)] == relieve.actions
    assert peak(inp, level.projected) <= peak(inp, relieve.projected)
    assert peak(inp, level.projected) <= inp.thresholds.migrate_above_fraction


def test_level_clears_a_node_relieve_cannot_by_making_room_first() -> None:
    # a holds one big CT; the only node with room for it is c, once c's small CTs have gone to b.
    inp = pool(
        [("a", 56, 3), ("b", 56, 10), ("c", 56, 1)],
        [(100, "a", 40.0), (101, "a", 1.0), (200, "c", 1.5), (201, "c", 1.5), (202, "c", 1.5)],
    )
    assert peak(inp, plan_balance(inp).projected) > inp.thresholds.migrate_above_fraction
    plan = plan_balance(_level(inp))
    assert peak(inp, plan.projected) <= inp.thresholds.migrate_above_fraction
    assert [a.vmid for a in plan.actions][-1] == 100


def test_the_kept_prefix_is_the_shortest_within_the_tolerance_and_never_cuts_relief() -> None:
    points = [(0, 0.70), (1, 0.62), (2, 0.58), (4, 0.55), (5, 0.54)]
    assert shortest_good_prefix(points, 0.05, 0.75) == 4
    assert shortest_good_prefix(points, 0.1, 0.75) == 2
    assert shortest_good_prefix(points, 0.0, 0.75) == 5
    assert shortest_good_prefix([(0, 0.74)], 0.05, 0.75) == 0
    # The best is 0.74: within 5 % is 0.777, but a plan that can bring every node under 75 % does.
    assert shortest_good_prefix([(0, 0.9), (1, 0.76), (2, 0.74)], 0.05, 0.75) == 2
    # Nothing gets under 75 %: every relieving step is kept.
    assert shortest_good_prefix([(0, 0.9), (1, 0.82), (2, 0.8)], 0.05, 0.75) == 2


def test_relieve_is_the_default_and_the_crd_maps_to_the_planner() -> None:
    assert BalancingLimits().objective is BalancingObjective.RELIEVE
    spec = BalancingSpec.model_validate({"objective": "Level", "minGainPercent": 3, "levelTolerancePercent": 10})
    assert BalancingSpec().objective is ApiObjective.RELIEVE
    assert (BalancingSpec().min_gain_percent, BalancingSpec().level_tolerance_percent) == (2, 5)
    limits = BalancingLimits.from_percent(
        objective=spec.objective.value,
        min_gain_percent=spec.min_gain_percent,
        level_tolerance_percent=spec.level_tolerance_percent,
    )
    assert limits.objective is BalancingObjective.LEVEL
    assert (limits.min_gain_fraction, limits.level_tolerance_fraction) == (0.03, 0.1)
    assert LEVEL.parse_args({"restartCost": 2}) == LevelArgs(restart_cost=2)


# -- properties over random clusters (test_properties.py's generator) --------------------------------


@PROPERTIES
@given(clusters())
def test_relieve_is_unchanged(inp: BalancingInput) -> None:
    assert plan_balance(inp) == plan_balance(inp, migration="rebalance")
    proposal = get_strategy("rebalance").propose(inp)
    assert plan_balance(unlimited(inp)).proposed[: len(proposal.actions)] == proposal.actions


@PROPERTIES
@given(clusters())
def test_level_never_overcommits_a_target_at_any_step(inp: BalancingInput) -> None:
    inp = _level(inp)
    allowed = receiving(inp)
    for limited in (inp, unlimited(inp)):
        for actions in (LEVEL.propose(limited).actions, plan_balance(limited).actions):
            state = WorkingState(inp.snapshot, inp.thresholds.metric)
            for action in actions:
                state.apply(action)
                if not isinstance(action, MigrateContainer):
                    continue
                node = state.nodes[action.target]
                assert action.target in allowed
                assert action.vmid in inp.managed and not inp.managed[action.vmid].pinned
                assert action.target not in inp.managed[action.vmid].excluded_nodes
                assert state.fraction(action.target) <= inp.thresholds.migrate_above_fraction + 1e-9
                assert node.mem_used <= node.mem_total and node.disk_used <= node.disk_total
            assert len({a.vmid for a in actions}) == len(actions)


@PROPERTIES
@given(clusters())
def test_level_never_makes_the_objective_worse(inp: BalancingInput) -> None:
    inp = _level(inp)
    for limited in (inp, unlimited(inp)):
        plan = plan_balance(limited)
        before = objective(inp.snapshot, inp.pool_node_names, inp.thresholds)
        after = objective(plan.projected, inp.pool_node_names, inp.thresholds)
        assert not after.worse_than(before), f"{before} -> {after}"


def relieve_is_a_fixed_point(inp: BalancingInput) -> bool:
    """Relieve's plan is a fixed point here. Not always: a CT that a stuck maintenance drain leaves and
    offload then stops is drained (stopped) by the next plan, whatever the objective; Level is held to
    being a fixed point wherever Relieve is."""
    inp = unlimited(inp)
    return plan_balance(next_cycle(inp, plan_balance(inp))).actions == ()


@PROPERTIES
@given(clusters(steady=True, in_flight=False))
def test_a_level_plan_is_a_fixed_point(inp: BalancingInput) -> None:
    assume(relieve_is_a_fixed_point(inp))
    inp = unlimited(_level(inp))
    first = plan_balance(inp)
    assert_nothing_moves_again(plan_balance(next_cycle(inp, first)))


def assert_nothing_moves_again(second: BalancePlan) -> None:
    """Planned again on its result, Level moves nothing more. What may follow is a restore onto a node
    the levelling calmed (found by the CI run of this property): a restore waits for sustainedSamples
    samples at or under restoreBelowPercent, so it comes in the cycle after the moves, by design."""
    assert not second.migrations, [a.reason for a in second.actions]
    assert all(isinstance(a, RestoreContainer) for a in second.actions), [a.reason for a in second.actions]


@PROPERTIES
@given(clusters(steady=True, in_flight=False))
def test_a_level_plan_is_a_fixed_point_with_a_gain_of_zero(inp: BalancingInput) -> None:
    assume(relieve_is_a_fixed_point(inp))
    inp = unlimited(_level(inp))
    inp = replace(inp, limits=replace(inp.limits, min_gain_fraction=0.0, level_tolerance_fraction=0.0))
    first = plan_balance(inp)
    assert_nothing_moves_again(plan_balance(next_cycle(inp, first)))

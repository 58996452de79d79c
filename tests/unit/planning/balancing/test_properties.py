"""Properties of every balancing plan, over random clusters (hypothesis, derandomized).

The clusters mix everything the planner must cope with: 2-6 nodes of different sizes, offline nodes,
nodes outside the pool, in maintenance or at weight 0, foreign CTs, pinned, locked, stopped,
offloaded and cooling-down CTs, operations in flight, all four metrics and weighted ones, random thresholds, limits and
sample histories. Whatever the cluster, a plan must:

* touch only our CTs, never a pinned one (except to start it where it lies), a locked one or one with
  an operation in flight;
* never take a target above its threshold at any step, nor beyond its memory or disk, nor move
  anything onto a node that may not receive;
* stay within maxConcurrentMigrations, one arrival per target, and the cooldown;
* let the executor run it safely: every arrival depends on the earlier departures it counted on;
* never make the objective worse (``objective.py``: nodes above the migrate threshold, the peak excess,
  the squared excess);
* be a fixed point: planning again on its projected result (histories extended by the projected
  sample) proposes nothing, and rebalance alone does not even need the cooldown for that;
* be deterministic, and project idempotently (the operator re-projects its journal every cycle).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pve_operator.planning.actions import MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.balancing import (
    BalancePlan,
    BalancingInput,
    BalancingLimits,
    BalancingObjective,
    InFlight,
    ManagedCT,
    PoolNodeSpec,
    PressureResource,
    PressureTrigger,
    RebalanceArgs,
    Thresholds,
    get_strategy,
    is_migration,
    objective,
    plan_balance,
    project,
)
from pve_operator.planning.balancing.state import WorkingState, restored_load
from pve_operator.planning.model import (
    ClusterSnapshot,
    ContainerObservation,
    ContainerStatus,
    Metric,
    NodeUsage,
    WeightedMetric,
)

MIB = 1024**2
GIB = 1024**3
NOW = 1_000_000.0

PROPERTIES = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def clusters(draw: st.DrawFn, *, steady: bool = False, in_flight: bool = True) -> BalancingInput:
    """A random but physically consistent cluster: node usage = host remainder + its CTs' usage.

    ``steady``: every node has been at its current figure for the last samples (no history window can
    change what is sustained by the next sample); otherwise half the nodes get a random history."""
    weighted = [WeightedMetric(memory=1, cpu=1, disk=0), WeightedMetric(memory=2, cpu=1, disk=1)]
    metric = draw(st.sampled_from([*Metric, *weighted]))
    samples = draw(st.integers(1, 3))
    # A pressure trigger (PSI) only where histories are not steady: pressure re-triggers until the
    # operator's next samples show it gone (it resets a node's pressure samples after a move).
    pressure = (
        PressureTrigger(
            draw(st.sampled_from(list(PressureResource))),
            draw(st.sampled_from([0.1, 0.2])),
            draw(st.sampled_from([0.05, 0.1, 0.3])),
        )
        if not steady and draw(st.booleans())
        else None
    )
    thresholds = Thresholds(
        metric=metric,
        restore_below_fraction=draw(st.sampled_from([0.4, 0.5, 0.6])),
        migrate_above_fraction=draw(st.sampled_from([0.7, 0.75, 0.8])),
        offload_above_fraction=draw(st.sampled_from([0.85, 0.9, 0.95])),
        sustained_samples=samples,
        pressure=pressure,
    )
    node_count = draw(st.integers(2, 6))
    names = [f"pve{i}" for i in range(node_count)]
    online = {n: draw(st.sampled_from([True] * 8 + [False])) for n in names}
    cts: list[ContainerObservation] = []
    managed: dict[int, ManagedCT] = {}
    vmid = 100
    for name in names:
        for _ in range(draw(st.integers(0, 7))):
            vmid += 1
            status = (
                draw(st.sampled_from([ContainerStatus.RUNNING] * 4 + [ContainerStatus.STOPPED]))
                if online[name]
                else ContainerStatus.UNKNOWN
            )
            running = status is ContainerStatus.RUNNING
            memory = draw(st.integers(256, 8192)) * MIB
            cores = draw(st.sampled_from([1, 2, 4]))
            cts.append(
                ContainerObservation(
                    vmid=vmid,
                    node=name,
                    status=status,
                    lock=draw(st.sampled_from([None] * 19 + ["backup"])),
                    cpu_cores=cores,
                    cpu_used_fraction=draw(st.integers(0, 100)) / 100 if running else 0.0,
                    memory_limit_bytes=memory * 2,
                    memory_used_bytes=memory if running else 0,
                    disk_limit_bytes=64 * GIB,
                    disk_used_bytes=draw(st.integers(1, 40)) * GIB,
                )
            )
            if draw(st.sampled_from([True] * 4 + [False])):
                cooled = draw(st.sampled_from([None] * 5 + [NOW - 600, NOW - 7200]))
                managed[vmid] = ManagedCT(
                    vmid=vmid,
                    policy=draw(st.sampled_from(["web", "batch"])),
                    priority=draw(st.sampled_from([10, 50, 100])),
                    created_at=f"2026-01-{draw(st.integers(1, 28)):02d}T00:00:00Z",
                    pinned=draw(st.sampled_from([False] * 9 + [True])),
                    offloaded=not running and draw(st.booleans()),
                    last_action_at=cooled,
                    restore_memory_bytes=memory if draw(st.booleans()) else None,
                    restore_cpu_fraction=draw(st.sampled_from([None, 0.1, 0.5])),
                )
    nodes = []
    for name in names:
        here = [c for c in cts if c.node == name]
        cores = draw(st.sampled_from([4, 8, 16]))
        memory_used = draw(st.integers(0, 8192)) * MIB + sum(c.memory_used_bytes for c in here)
        disk_used = draw(st.integers(0, 50)) * GIB + sum(c.disk_used_bytes for c in here)
        cpu_used = draw(st.integers(0, 200)) / 100 + sum(c.cpu_used_fraction * c.cpu_cores for c in here)
        nodes.append(
            NodeUsage(
                name=name,
                online=online[name],
                cpu_cores=cores,
                cpu_used_fraction=cpu_used / cores,
                memory_total_bytes=max(draw(st.sampled_from([16, 32, 64])) * GIB, memory_used),
                memory_used_bytes=memory_used,
                disk_total_bytes=max(draw(st.sampled_from([100, 200, 400])) * GIB, disk_used),
                disk_used_bytes=disk_used,
            )
        )
    snapshot = ClusterSnapshot.of(NOW, nodes, cts)
    history: dict[str, list[float]] = {}
    for usage in nodes:
        now = usage.used_fraction(metric)
        if steady or draw(st.booleans()):
            history[usage.name] = [now] * samples
        else:
            earlier = draw(st.lists(st.integers(30, 100), max_size=3))
            history[usage.name] = [p / 100 for p in earlier] + [now]
    pressure_history = (
        {n: [p / 100 for p in draw(st.lists(st.integers(0, 60), min_size=samples, max_size=samples))] for n in names}
        if pressure is not None
        else {}
    )
    pool = [
        PoolNodeSpec(
            name,
            weight=draw(st.sampled_from([1, 1, 1, 2, 0])),
            maintenance=draw(st.sampled_from([False] * 6 + [True])),
        )
        for name in names
        if draw(st.sampled_from([True] * 8 + [False]))
    ]
    flights: dict[int, str] = {}
    busy: frozenset[int] = frozenset()
    ours = sorted(managed)
    if in_flight and ours and pool:
        for chosen in draw(st.lists(st.sampled_from(ours), max_size=2, unique=True)):
            flights[chosen] = draw(st.sampled_from([p.name for p in pool]))
        busy = frozenset(draw(st.lists(st.sampled_from(ours), max_size=1)))
    return BalancingInput(
        snapshot=snapshot,
        pool_nodes=tuple(pool),
        managed=managed,
        history=history,
        now=NOW,
        thresholds=thresholds,
        limits=BalancingLimits(
            max_concurrent_migrations=draw(st.integers(1, 3)),
            max_inbound_per_target=draw(st.integers(1, 2)),
            min_improvement_fraction=draw(st.sampled_from([0.0, 0.05, 0.1])),
        ),
        in_flight=InFlight(migrations=MappingProxyType(flights), other_vmids=busy),
        pressure_history=pressure_history,
    )


def unlimited(inp: BalancingInput) -> BalancingInput:
    """The same input with the per-cycle limits out of the way (cooldown and the gate stay)."""
    return replace(inp, limits=replace(inp.limits, max_concurrent_migrations=10_000, max_inbound_per_target=10_000))


def next_cycle(inp: BalancingInput, plan: BalancePlan) -> BalancingInput:
    """What the operator feeds the next cycle once the plan is done: the projected snapshot, every
    history extended by its projected sample, acted CTs stamped for cooldown, offload marks updated."""
    projected = plan.projected
    history = {
        name: [*inp.history.get(name, []), projected.nodes[name].used_fraction(inp.thresholds.metric)]
        for name in projected.nodes
    }
    acted = {a.vmid: a for a in plan.actions}

    def offloaded(m: ManagedCT) -> bool:
        action = acted.get(m.vmid)
        if isinstance(action, OffloadContainer):
            return True
        if isinstance(action, RestoreContainer):
            return False
        return m.offloaded

    managed = {
        vmid: replace(m, last_action_at=inp.now if vmid in acted else m.last_action_at, offloaded=offloaded(m))
        for vmid, m in inp.managed.items()
    }
    return replace(inp, snapshot=projected, history=history, managed=managed, in_flight=InFlight())


def receiving(inp: BalancingInput) -> set[str]:
    return {
        p.name
        for p in inp.pool_nodes
        if not p.maintenance and p.weight > 0 and p.name in inp.snapshot.nodes and inp.snapshot.nodes[p.name].online
    }


@PROPERTIES
@given(clusters())
def test_only_our_free_cts_are_touched(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    busy = inp.in_flight.busy_vmids
    for action in plan.actions:
        assert action.vmid in inp.managed, f"foreign CT {action.vmid} touched"
        ct = inp.snapshot.containers[action.vmid]
        assert ct.lock is None and action.vmid not in busy
        if inp.managed[action.vmid].pinned:
            assert isinstance(action, RestoreContainer) and not action.moves
    assert len({a.vmid for a in plan.actions}) == len(plan.actions), "a CT is acted on twice"


@PROPERTIES
@given(clusters())
def test_no_target_ends_above_its_threshold_at_any_step(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    state = WorkingState(inp.snapshot, inp.thresholds.metric)
    allowed = receiving(inp)
    for action in plan.actions:
        state.apply(action)
        if isinstance(action, OffloadContainer):
            continue
        node = state.nodes[action.target]
        if isinstance(action, MigrateContainer) or action.moves:
            assert action.target in allowed, f"{action.kind} onto ineligible {action.target}"
        limit = (
            inp.thresholds.migrate_above_fraction
            if isinstance(action, MigrateContainer)
            else inp.thresholds.restore_below_fraction
        )
        assert state.fraction(action.target) <= limit + 1e-9
        assert node.mem_used <= node.mem_total and node.disk_used <= node.disk_total


@PROPERTIES
@given(clusters())
def test_limits_hold(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    migrations = [a for a in plan.actions if is_migration(a)]
    limits = inp.limits
    assert len(migrations) <= max(0, limits.max_concurrent_migrations - len(inp.in_flight.migrations))
    for target in {a.target for a in migrations}:  # type: ignore[union-attr]
        arriving = sum(1 for a in migrations if a.target == target)  # type: ignore[union-attr]
        assert arriving + inp.in_flight.inbound_count(target) <= limits.max_inbound_per_target
    for action in plan.actions:
        if isinstance(action, MigrateContainer) and action.evacuation:
            continue
        assert not inp.managed[action.vmid].in_cooldown(inp.now, limits.cooldown_seconds)


@PROPERTIES
@given(clusters())
def test_every_arrival_waits_for_the_departures_it_counted_on(inp: BalancingInput) -> None:
    plan = plan_balance(unlimited(inp))
    for index, action in enumerate(plan.actions):
        if isinstance(action, OffloadContainer):
            continue
        departures = {
            earlier.vmid
            for earlier in plan.actions[:index]
            if earlier.node == action.target and (not isinstance(earlier, RestoreContainer) or earlier.moves)
        }
        assert departures <= set(plan.depends_on.get(action.vmid, ()))


@PROPERTIES
@given(clusters())
def test_objective_never_gets_worse(inp: BalancingInput) -> None:
    for limited in (inp, unlimited(inp)):
        plan = plan_balance(limited)
        before = objective(inp.snapshot, inp.pool_node_names, inp.thresholds)
        after = objective(plan.projected, inp.pool_node_names, inp.thresholds)
        assert not after.worse_than(before), f"{before} -> {after}"


@PROPERTIES
@given(clusters(steady=True, in_flight=False))
def test_a_plan_is_a_fixed_point(inp: BalancingInput) -> None:
    inp = unlimited(inp)
    first = plan_balance(inp)
    second = plan_balance(next_cycle(inp, first))
    assert second.actions == (), [a.reason for a in second.actions]


@PROPERTIES
@given(clusters(steady=True, in_flight=False))
def test_rebalance_is_a_fixed_point_without_cooldown(inp: BalancingInput) -> None:
    rebalance = get_strategy("rebalance")
    first = rebalance.propose(inp, RebalanceArgs())
    projected = project(inp.snapshot, first.actions)
    history = {
        name: [*inp.history[name], projected.nodes[name].used_fraction(inp.thresholds.metric)]
        for name in projected.nodes
    }
    second = rebalance.propose(replace(inp, snapshot=projected, history=history), RebalanceArgs())
    assert second.actions == (), [a.reason for a in second.actions]


@PROPERTIES
@given(clusters())
def test_plans_are_deterministic_and_projection_is_idempotent(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    shuffled = replace(
        inp,
        snapshot=ClusterSnapshot.of(
            inp.snapshot.taken_at,
            reversed(list(inp.snapshot.nodes.values())),
            reversed(list(inp.snapshot.containers.values())),
        ),
        managed=dict(reversed(list(inp.managed.items()))),
    )
    again = plan_balance(shuffled)
    assert again.actions == plan.actions and again.refusals == plan.refusals
    assert project(plan.projected, plan.actions) == plan.projected


@PROPERTIES
@given(clusters())
def test_restores_count_what_projection_adds(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    for action in plan.restores:
        ct = inp.snapshot.containers[action.vmid]
        expected = restored_load(ct, action.expected_memory_used_bytes, action.expected_cpu_used_fraction)
        assert plan.projected.containers[action.vmid].memory_used_bytes == expected.memory_bytes
        assert plan.projected.containers[action.vmid].node == action.target


@PROPERTIES
@given(clusters())
def test_no_ct_is_moved_onto_a_node_under_pressure(inp: BalancingInput) -> None:
    for objective_inp in (inp, replace(inp, limits=replace(inp.limits, objective=BalancingObjective.LEVEL))):
        plan = plan_balance(objective_inp)
        for action in plan.migrations:
            assert not inp.under_pressure(action.target), (action, inp.pressure_history)


@PROPERTIES
@given(clusters())
def test_pressure_relief_is_only_for_sustained_pressure(inp: BalancingInput) -> None:
    plan = plan_balance(unlimited(inp))
    for action in plan.migrations:
        if "pressure" in action.reason.split(";")[0]:
            assert inp.sustained_pressure(action.node), action.reason

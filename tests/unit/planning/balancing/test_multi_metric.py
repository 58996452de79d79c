"""Balancing on more than one resource (issue 13 §2): ``thresholds.metric: weighted`` with
``metricWeights``, and CPU as a sustained average over the sample window (``cpu_window.py``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pve_operator.api.v1alpha1.serverpool import MetricWeights, UsageMetric
from pve_operator.api.v1alpha1.serverpool import Thresholds as ThresholdsSpec
from pve_operator.planning.actions import MigrateContainer
from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    BalancingObjective,
    ManagedCT,
    PoolNodeSpec,
    PressureResource,
    PressureTrigger,
    Thresholds,
    plan_balance,
)
from pve_operator.planning.balancing.cpu_window import CpuWindow
from pve_operator.planning.model import (
    ClusterSnapshot,
    ContainerObservation,
    ContainerStatus,
    Metric,
    NodeUsage,
    WeightedMetric,
    pool_measure,
)
from pve_operator.planning.reconcile import pool_used_fraction
from tests.builders import build_ct, build_node

GIB = 1024**3
NOW = 1_000_000.0


def node(name: str, *, cores: int = 16, cpu: float = 0.0, mem_gib: float = 0.0, total_gib: float = 64) -> NodeUsage:
    return build_node(
        name, cores=cores, cpu=cpu, memory_gib=total_gib, memory_used_gib=mem_gib, disk_gib=1000, disk_used_gib=100
    )


def ct(vmid: int, on: str, *, cores: int = 4, cpu: float = 0.0, mem_gib: float = 1.0) -> ContainerObservation:
    mib = int(mem_gib * 1024)
    return build_ct(
        vmid, on, cores=cores, cpu=cpu, memory_mib=2 * mib, memory_used_mib=mib, disk_gib=16, disk_used_gib=4
    )


def balancing_input(snapshot: ClusterSnapshot, metric: Metric | WeightedMetric, **limits: object) -> BalancingInput:
    thresholds = Thresholds(metric=metric)
    return BalancingInput(
        snapshot=snapshot,
        pool_nodes=tuple(PoolNodeSpec(n) for n in snapshot.nodes),
        managed={v: ManagedCT(v, "web", 100, "2026-01-01T00:00:00Z") for v in snapshot.containers},
        history={n: [u.used_fraction(metric)] * thresholds.sustained_samples for n, u in snapshot.nodes.items()},
        now=NOW,
        thresholds=thresholds,
        limits=BalancingLimits(max_concurrent_migrations=10, max_inbound_per_target=10, **limits),  # type: ignore[arg-type]
    )


# -- the weighted measure ----------------------------------------------------------------------


def test_the_weighted_figure_is_the_weighted_mean_of_the_resources() -> None:
    usage = node("a", cpu=0.9, mem_gib=32)  # cpu 90 %, memory 50 %, disk 10 %
    assert usage.used_fraction(WeightedMetric(memory=1, cpu=1, disk=0)) == pytest.approx(0.70)
    assert usage.used_fraction(WeightedMetric(memory=100, cpu=50, disk=0)) == pytest.approx((0.5 + 0.45) / 1.5)
    assert usage.used_fraction(WeightedMetric(memory=0, cpu=0, disk=5)) == pytest.approx(0.10)
    assert WeightedMetric(memory=100, cpu=50, disk=0).value == "weighted(memory 100, cpu 50)"


def test_weights_that_count_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one above 0"):
        WeightedMetric(memory=0, cpu=0, disk=0)
    with pytest.raises(ValueError, match="at least one above 0"):
        WeightedMetric(memory=-1, cpu=2, disk=0)


def test_the_pools_thresholds_name_the_measure() -> None:
    assert pool_measure(ThresholdsSpec()) is Metric.MEMORY
    assert pool_measure(ThresholdsSpec(metric=UsageMetric.MAX)) is Metric.MAX
    assert pool_measure(ThresholdsSpec(metric=UsageMetric.WEIGHTED)) == WeightedMetric(memory=100, cpu=100, disk=0)
    weighted = ThresholdsSpec(metric=UsageMetric.WEIGHTED, metricWeights=MetricWeights(cpu=50))
    assert pool_measure(weighted) == WeightedMetric(memory=100, cpu=50, disk=0)


def test_fill_mode_measures_the_pool_with_the_same_weights() -> None:
    snapshot = ClusterSnapshot.of(NOW, [node("a", cpu=1.0, mem_gib=16), node("b", cpu=0.0, mem_gib=16)])
    measure = WeightedMetric(memory=1, cpu=1, disk=0)
    # cpu 50 % of the pool, memory 25 %.
    assert pool_used_fraction(snapshot, ["a", "b"], measure) == pytest.approx(0.375)


def cpu_hot_pool() -> ClusterSnapshot:
    """Node a: memory 62.5 %, CPU 100 % (two busy CTs and two idle ones of the same memory); b idle."""
    cts = [ct(101, "a", cpu=1.0), ct(102, "a", cpu=1.0), ct(103, "a", cpu=0.0), ct(104, "a", cpu=0.0)]
    return ClusterSnapshot.of(NOW, [node("a", cpu=0.5 + 0.5, mem_gib=40), node("b", mem_gib=8)], cts)


def test_relieve_on_memory_alone_leaves_a_cpu_saturated_node_alone() -> None:
    assert plan_balance(balancing_input(cpu_hot_pool(), Metric.MEMORY)).actions == ()


def test_relieve_on_weighted_moves_the_busy_cts_off_a_cpu_saturated_node() -> None:
    inp = balancing_input(cpu_hot_pool(), WeightedMetric(memory=1, cpu=1, disk=0))
    plan = plan_balance(inp)
    moved = {a.vmid for a in plan.actions if isinstance(a, MigrateContainer)}
    # Node a is at (62.5 % + 100 %) / 2 = 81 %: above 75 %. A busy CT relieves it (4 cores of 16 = 25 CPU
    # points, 12.5 weighted), an idle one of the same memory by less than one point.
    assert moved and moved <= {101, 102}
    measure = inp.thresholds.metric
    assert plan.projected.nodes["a"].used_fraction(measure) <= 0.75
    assert plan.projected.nodes["b"].used_fraction(measure) <= 0.75


def test_level_on_weighted_evens_out_cpu_and_memory_together() -> None:
    # Nothing above 75 % (a at 62 % weighted): only Level acts, and it moves a busy CT.
    cts = [ct(101, "a", cpu=1.0), ct(102, "a", cpu=0.0), ct(103, "a", cpu=0.0)]
    snapshot = ClusterSnapshot.of(NOW, [node("a", cpu=0.25 + 0.5, mem_gib=32), node("b", mem_gib=8)], cts)
    inp = balancing_input(snapshot, WeightedMetric(memory=1, cpu=1, disk=0))
    assert plan_balance(inp).actions == ()
    level = replace(inp, limits=replace(inp.limits, objective=BalancingObjective.LEVEL))
    plan = plan_balance(level)
    assert [a.vmid for a in plan.actions] == [101]
    # A fixed point: planned again on its own result, nothing.
    again = replace(level, snapshot=plan.projected)
    assert plan_balance(again).actions == ()


# -- CPU as a sustained average ----------------------------------------------------------------


def test_the_planner_sees_cpu_averaged_over_the_window() -> None:
    window = CpuWindow(3)
    for cpu in (0.1, 0.1, 1.0):  # CT 101 bursts in the last sample only
        window.record(ClusterSnapshot.of(NOW, [node("a", cpu=(4 + 4 * cpu) / 16)], [ct(101, "a", cpu=cpu)]))
    last = ClusterSnapshot.of(NOW, [node("a", cpu=0.5)], [ct(101, "a", cpu=1.0)])
    averaged = window.averaged(last)
    assert averaged.containers[101].cpu_used_fraction == pytest.approx(0.4)
    # 4 cores of host load, plus the CT's average 1.6 cores, of 16.
    assert averaged.nodes["a"].cpu_used_fraction == pytest.approx(5.6 / 16)
    # Memory and disk are what the snapshot says.
    assert averaged.nodes["a"].memory_used_bytes == last.nodes["a"].memory_used_bytes


def test_a_moved_ct_takes_its_cpu_with_it_at_once() -> None:
    window = CpuWindow(3)
    for _ in range(3):
        window.record(
            ClusterSnapshot.of(NOW, [node("a", cpu=(2 + 4) / 16), node("b", cpu=0.0)], [ct(101, "a", cpu=1.0)])
        )
    moved = ClusterSnapshot.of(NOW, [node("a", cpu=2 / 16), node("b", cpu=4 / 16)], [ct(101, "b", cpu=1.0)])
    window.record(moved)
    averaged = window.averaged(moved)
    # The source's average does not keep the CT's CPU for a window after it left (only its host's 2 cores).
    assert averaged.nodes["a"].cpu_used_fraction == pytest.approx(2 / 16)
    assert averaged.nodes["b"].cpu_used_fraction == pytest.approx(4 / 16)


def test_a_ct_that_stopped_starts_a_new_window() -> None:
    window = CpuWindow(3)
    window.record(ClusterSnapshot.of(NOW, [node("a", cpu=0.25)], [ct(101, "a", cpu=1.0)]))
    stopped = replace(ct(101, "a"), status=ContainerStatus.STOPPED)
    window.record(ClusterSnapshot.of(NOW, [node("a", cpu=0.0)], [stopped]))
    started = ClusterSnapshot.of(NOW, [node("a", cpu=0.05)], [ct(101, "a", cpu=0.2)])
    window.record(started)
    assert window.averaged(started).containers[101].cpu_used_fraction == pytest.approx(0.2)


def test_a_shorter_window_keeps_the_newest_samples() -> None:
    window = CpuWindow(3)
    for cpu in (1.0, 0.0, 0.5):
        window.record(ClusterSnapshot.of(NOW, [node("a", cpu=cpu * 4 / 16)], [ct(101, "a", cpu=cpu)]))
    window.resize(2)
    last = ClusterSnapshot.of(NOW, [node("a", cpu=0.125)], [ct(101, "a", cpu=0.5)])
    assert window.averaged(last).containers[101].cpu_used_fraction == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 1"):
        window.resize(0)


def test_a_burst_in_the_last_sample_does_not_pick_the_ct_to_move() -> None:
    """Node a (20 cores, 12 of them host load) holds CT 102, steadily busy on 4 cores, and CT 101 (4 cores,
    less memory, so the cheaper move) that idles at 10 % and burst to 100 % in the last sample. On the
    last sample alone, 101 looks like the cheapest relief; on the window's average it is 102 that
    carries the load, and one move of it brings a back under 75 %."""
    window = CpuWindow(3)
    samples = []
    for burst in (0.1, 0.1, 1.0):
        busy = 12 + 4 * 1.0 + 4 * burst
        snap = ClusterSnapshot.of(
            NOW,
            [node("a", cores=20, cpu=busy / 20, mem_gib=8), node("b", cores=20, cpu=0.0, mem_gib=8)],
            [ct(101, "a", cpu=burst, mem_gib=0.5), ct(102, "a", cpu=1.0, mem_gib=2.0)],
        )
        window.record(snap)
        samples.append(snap)
    last = samples[-1]
    history = {"a": [s.nodes["a"].cpu_used_fraction for s in samples], "b": [0.0, 0.0, 0.0]}

    def plan_for(snapshot: ClusterSnapshot) -> list[int]:
        inp = replace(balancing_input(snapshot, Metric.CPU), history=history)
        return [a.vmid for a in plan_balance(inp).actions]

    assert plan_for(last)[0] == 101, "the last sample alone picks the bursting CT first"
    averaged = window.averaged(last)
    assert plan_for(averaged) == [102]


# -- the pressure trigger (thresholds.pressure) ------------------------------------------------

CPU_PRESSURE = PressureTrigger(PressureResource.CPU, above_fraction=0.2, relief_fraction=0.1)


def pressured_pool(
    pressure: dict[str, list[float]], trigger: PressureTrigger = CPU_PRESSURE, **limits: object
) -> BalancingInput:
    """Three 16-core 64 GiB nodes on the memory metric: a at 56 % memory and 100 % CPU (eight CTs busy on
    2 cores each), b idle, c at 20 % memory and 12.5 % CPU: nothing near migrateAbovePercent 75 in
    memory, so only pressure can move anything."""
    cts = [ct(100 + i, "a", cpu=0.5, mem_gib=4.0) for i in range(8)] + [ct(200, "c", cpu=0.5, mem_gib=4.0)]
    snapshot = ClusterSnapshot.of(
        NOW,
        [node("a", cpu=1.0, mem_gib=36), node("b", mem_gib=8), node("c", cpu=0.125, mem_gib=12.8)],
        cts,
    )
    inp = balancing_input(snapshot, Metric.MEMORY, **limits)
    return replace(inp, thresholds=replace(inp.thresholds, pressure=trigger), pressure_history=pressure)


def test_sustained_pressure_sheds_the_relief_off_a_node_under_the_thresholds() -> None:
    # c came under pressure lately (not sustained): it sheds nothing yet, but receives nothing either.
    inp = pressured_pool({"a": [0.4, 0.45, 0.5], "b": [0.0, 0.0, 0.0], "c": [0.1, 0.3, 0.3]})
    plan = plan_balance(inp)
    moves = plan.migrations
    # 10 points of a's CPU (the stalled resource), not of the pool's memory metric: one busy CT
    # (2 cores of 16 = 12.5 points) does it.
    assert [(m.node, m.target) for m in moves] == [("a", "b")]
    assert plan.projected.nodes["a"].used_fraction(Metric.CPU) == pytest.approx(0.875)
    # c is under pressure (latest sample): it receives nothing, although it has the room.
    assert (
        "a cpu pressure 50% > pressure.abovePercent 20 for 3 samples: shed 10 points of its cpu use "
        "(cpu 100% → 87.5%)" in moves[0].reason
    )
    assert plan_balance(replace(inp, thresholds=replace(inp.thresholds, pressure=None))).actions == ()


def test_memory_pressure_sheds_memory() -> None:
    memory = PressureTrigger(PressureResource.MEMORY, above_fraction=0.2, relief_fraction=0.1)
    inp = pressured_pool({"a": [0.5] * 3, "b": [0.0] * 3, "c": [0.0] * 3}, memory)
    plan = plan_balance(inp)
    # 10 points of 64 GiB: two 4 GiB CTs (6.25 points each), to the coolest nodes.
    assert len(plan.migrations) == 2
    assert plan.projected.nodes["a"].used_fraction(Metric.MEMORY) == pytest.approx(0.5625 - 0.125)


def test_pressure_that_did_not_last_is_waited_out() -> None:
    inp = pressured_pool({"a": [0.1, 0.45, 0.5], "b": [0.0] * 3, "c": [0.0] * 3})
    assert plan_balance(inp).actions == ()


def test_a_node_under_pressure_with_nowhere_to_go_says_so() -> None:
    inp = pressured_pool({"a": [0.5] * 3, "b": [0.3] * 3, "c": [0.3] * 3})
    plan = plan_balance(inp)
    assert plan.actions == ()
    stuck = [r for r in plan.refusals if r.node == "a" and r.vmid is None]
    assert stuck and "a stays under pressure (50% stalled): no node without pressure has room" in stuck[0].reason


def test_level_relieves_pressure_too_and_never_levels_into_a_pressured_node() -> None:
    inp = pressured_pool({"a": [0.5] * 3, "b": [0.0] * 3, "c": [0.3] * 3})
    level = replace(inp, limits=replace(inp.limits, objective=BalancingObjective.LEVEL))
    plan = plan_balance(level)
    assert plan.migrations and all(m.target == "b" for m in plan.migrations)
    assert plan.projected.nodes["a"].used_fraction(Metric.CPU) <= 0.9 + 1e-9


def test_once_the_moves_are_done_fresh_samples_decide_again() -> None:
    """The operator drops a node's pressure samples when a move off it ends: the projected result with
    no samples yet plans nothing, and pressure that is gone in the next samples plans nothing either."""
    inp = pressured_pool({"a": [0.5] * 3, "b": [0.0] * 3, "c": [0.3] * 3})
    plan = plan_balance(inp)
    after = replace(inp, snapshot=plan.projected, pressure_history={"b": [0.0] * 3, "c": [0.3] * 3})
    assert plan_balance(after).actions == ()
    calm = replace(after, pressure_history={"a": [0.05] * 3, "b": [0.0] * 3, "c": [0.3] * 3})
    assert plan_balance(calm).actions == ()


def test_the_trigger_reads_the_pve9_rrd_column_and_refuses_nonsense() -> None:
    assert CPU_PRESSURE.rrd_key == "pressurecpusome"
    assert PressureTrigger(PressureResource.MEMORY, 0.2, 0.1).rrd_key == "pressurememorysome"
    with pytest.raises(ValueError, match="relief_fraction must be above 0"):
        PressureTrigger(PressureResource.MEMORY, 0.2, 0.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        PressureTrigger(PressureResource.MEMORY, 1.5, 0.1)

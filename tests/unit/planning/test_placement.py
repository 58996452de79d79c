"""Weighted placement and VMID allocation: what users see as the CT distribution."""

from __future__ import annotations

from collections import Counter

import pytest

from pve_operator.planning.model import Metric
from pve_operator.planning.placement import (
    ContainerDemand,
    NodeCandidate,
    PlacementStrategy,
    allocate_vmids,
    place,
)
from tests.builders import GIB, MIB, build_node

DEMAND = ContainerDemand(memory_bytes=2048 * MIB, cpu_cores=1, disk_bytes=8 * GIB)


def lab_candidates() -> list[NodeCandidate]:
    px1 = NodeCandidate(build_node("srv-px1"), weight=2)
    px2 = NodeCandidate(build_node("srv-px2"), weight=1)
    return [px1, px2]


def test_weighted_spread_gives_the_lab_six_and_three() -> None:
    result = place(range(9), lab_candidates(), DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert Counter(result.nodes) == {"srv-px1": 6, "srv-px2": 3}


def test_weighted_spread_every_prefix_stays_close_to_the_weights() -> None:
    result = place(range(30), lab_candidates(), ContainerDemand(0, 0, 0), metric=Metric.MEMORY, ceiling_fraction=1.0)
    for n in range(1, len(result.nodes) + 1):
        prefix = Counter(result.nodes[:n])
        # Each node's count is within one CT of its exact weighted share.
        assert abs(prefix["srv-px1"] - n * 2 / 3) <= 1
        assert abs(prefix["srv-px2"] - n / 3) <= 1


def test_weighted_spread_accounts_for_existing_ct_counts() -> None:
    px1 = NodeCandidate(build_node("srv-px1"), weight=2, managed_count=6)
    px2 = NodeCandidate(build_node("srv-px2"), weight=1, managed_count=0)
    result = place(range(3), [px1, px2], DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert result.nodes == ["srv-px2", "srv-px2", "srv-px2"]


def test_ceiling_counts_the_new_ct_at_its_configured_size() -> None:
    # 32 GiB node, 2 GiB used, 2 GiB per CT, ceiling 80% = 25.6 GiB: 11 CTs fit (24 GiB), a 12th would not.
    only = [NodeCandidate(build_node("srv-px1"), weight=1)]
    result = place(range(20), only, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert result.placed == 11
    assert "ceiling 80%" in result.refusals["srv-px1"]


def test_full_node_is_skipped_and_weights_apply_to_the_rest() -> None:
    full = NodeCandidate(build_node("srv-px1", memory_used_gib=26), weight=2)
    free = NodeCandidate(build_node("srv-px2"), weight=1)
    result = place(range(3), [full, free], DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert result.nodes == ["srv-px2"] * 3
    assert "memory 81% now" in result.refusals["srv-px1"]


@pytest.mark.parametrize(
    ("node_kwargs", "candidate_kwargs", "reason"),
    [
        ({"online": False}, {}, "offline"),
        ({}, {"maintenance": True}, "in maintenance"),
        ({}, {"weight": 0}, "weight 0"),
    ],
)
def test_ineligible_nodes_get_nothing_and_say_why(
    node_kwargs: dict[str, bool], candidate_kwargs: dict[str, object], reason: str
) -> None:
    odd = NodeCandidate(build_node("odd", **node_kwargs), **{"weight": 5, **candidate_kwargs})  # type: ignore[arg-type]
    ok = NodeCandidate(build_node("ok"), weight=1)
    result = place(range(4), [odd, ok], DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert result.nodes == ["ok"] * 4
    assert result.refusals["odd"] == reason


def test_cpu_and_max_metrics_project_cores_over_node_cores() -> None:
    # 8 cores at 5%: each 1-core CT adds 12.5%; ceiling 50% admits 3 (42.5%), not 4 (55%).
    only = [NodeCandidate(build_node("n", cores=8, cpu=0.05), weight=1)]
    assert place(range(9), only, DEMAND, metric=Metric.CPU, ceiling_fraction=0.5).placed == 3
    assert place(range(9), only, DEMAND, metric=Metric.MAX, ceiling_fraction=0.5).placed == 3


def test_weighted_random_is_about_two_to_one_over_3000_draws() -> None:
    result = place(
        range(3000),
        lab_candidates(),
        ContainerDemand(0, 0, 0),
        metric=Metric.MEMORY,
        ceiling_fraction=1.0,
        strategy=PlacementStrategy.WEIGHTED_RANDOM,
        seed="policy-uid",
    )
    share = Counter(result.nodes)["srv-px1"] / 3000
    # Binomial(3000, 2/3): sigma = 0.0086; 4 sigma keeps this deterministic test meaningful.
    assert abs(share - 2 / 3) < 0.035


def test_weighted_random_is_reproducible_per_ct_index() -> None:
    kwargs = dict(metric=Metric.MEMORY, ceiling_fraction=1.0, strategy=PlacementStrategy.WEIGHTED_RANDOM)
    first = place(range(50), lab_candidates(), DEMAND, seed="a", **kwargs)  # type: ignore[arg-type]
    again = place(range(50), lab_candidates(), DEMAND, seed="a", **kwargs)  # type: ignore[arg-type]
    other = place(range(50), lab_candidates(), DEMAND, seed="b", **kwargs)  # type: ignore[arg-type]
    assert first.nodes == again.nodes
    assert first.nodes != other.nodes


def test_vmid_is_range_start_plus_index_when_free() -> None:
    assert allocate_vmids([0, 1, 7], range(3100, 3200), set()) == {0: 3100, 1: 3101, 7: 3107}


def test_vmids_used_by_anything_else_are_skipped_never_taken_over() -> None:
    used = {3100, 3101, 3103, 4000}
    # Index 0 and 1 are taken by foreign guests: they get the highest ids no index prefers.
    assert allocate_vmids([0, 1, 2], range(3100, 3200), used) == {0: 3199, 1: 3198, 2: 3102}
    assert allocate_vmids([0, 1, 2, 3, 4], range(3100, 3105), used) == {2: 3102, 4: 3104}
    assert allocate_vmids([], range(3100, 3200), used) == {}


def test_a_displaced_index_does_not_push_the_next_indices_off_their_own_vmids() -> None:
    """Seen in a review: another guest held 3112-3113, so CTs 12 and 13 took 3114 and 3115, and CTs 14
    and 15 then lost start + index too. Displaced indices now take ids from the top of the range."""
    held = {3112, 3113}
    first = allocate_vmids([12, 13], range(3100, 3120), held)
    assert first == {12: 3119, 13: 3118}
    later = allocate_vmids([14, 15], range(3100, 3120), held | set(first.values()))
    assert later == {14: 3114, 15: 3115}


def test_reserved_vmids_are_never_allocated() -> None:
    reserved = frozenset(range(3105, 3120))
    assert allocate_vmids([0, 5, 6], range(3100, 3120), set(), reserved) == {0: 3100, 5: 3104, 6: 3103}
    assert allocate_vmids([0, 5, 6], range(3105, 3120), set(), reserved) == {}


def test_a_ct_larger_than_a_node_is_refused_there_with_the_figures() -> None:
    """Seen in a review: more cores than any node has, or a rootfs larger than its storage, were
    created or attempted without a word. They are PoolFull with the reason now, whatever the metric."""
    tiny = build_node("tiny", cores=2, memory_gib=4, memory_used_gib=0, disk_gib=10, disk_used_gib=0)
    small = NodeCandidate(usage=tiny, weight=1)
    big = NodeCandidate(usage=build_node("big", cores=16, memory_gib=64, disk_gib=400), weight=1)
    too_many_cores = ContainerDemand(memory_bytes=GIB, cpu_cores=4, disk_bytes=GIB)
    result = place([0], [small, big], too_many_cores, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert result.nodes == ["big"]
    nowhere = place([0], [small], too_many_cores, metric=Metric.MEMORY, ceiling_fraction=0.8)
    assert nowhere.nodes == [] and nowhere.refusals == {"tiny": "template.cores 4 > the node's 2 cores"}
    huge_disk = ContainerDemand(memory_bytes=GIB, cpu_cores=1, disk_bytes=20 * GIB)
    refused = place([0], [small], huge_disk, metric=Metric.MEMORY, ceiling_fraction=0.8).refusals["tiny"]
    assert refused == "rootfs 20 GiB > the node's CT storage of 10 GiB"
    huge_memory = ContainerDemand(memory_bytes=8 * GIB, cpu_cores=1, disk_bytes=GIB)
    refused = place([0], [small], huge_memory, metric=Metric.CPU, ceiling_fraction=0.8).refusals["tiny"]
    assert refused == "template.memoryMiB 8192 > the node's 4096 MiB"

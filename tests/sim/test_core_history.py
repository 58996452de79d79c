"""The load model over time (``pve_sim.history``): placements, profile changes, node aggregation."""

from __future__ import annotations

import pytest

from pve_sim.history import GIB, MIB, NodeCapacity, Placement, UsageModel
from pve_sim.load import ConstantProfile, StepProfile

START = 1_750_000_000.0


def constant(value: float) -> ConstantProfile:
    return ConstantProfile(value=value)


@pytest.fixture
def model() -> UsageModel:
    usage = UsageModel(START)
    for name in ("pve1", "pve2"):
        usage.add_node(
            name,
            NodeCapacity(cores=8, memory_bytes=32 * GIB, rootfs_bytes=100 * GIB),
            {"cpu": constant(0.05), "memory": constant(0.1), "disk": constant(0.2)},
            online=True,
            epoch=START,
        )
    return usage


def placement(epoch: float, node: str, running: bool) -> Placement:
    return Placement(
        epoch, node, running, cpus=2.0, maxmem_bytes=1024 * MIB, maxdisk_bytes=8 * GIB, storage="local-lvm"
    )


def test_running_ct_adds_its_memory_and_cpu_to_its_node(model: UsageModel) -> None:
    model.add_ct(
        101, placement(START, "pve1", True), {"memory": constant(0.5), "cpu": constant(0.25), "disk": constant(0.5)}
    )

    usage = model.node_usage_at("pve1", START + 1)
    other = model.node_usage_at("pve2", START + 1)

    assert usage.mem_bytes == int(0.1 * 32 * GIB) + 512 * MIB
    assert usage.cpu_fraction == pytest.approx((0.05 * 8 + 0.25 * 2) / 8)
    assert usage.running_cts == 1
    assert other.mem_bytes == int(0.1 * 32 * GIB)


def test_stopped_ct_uses_only_disk(model: UsageModel) -> None:
    model.add_ct(
        101, placement(START, "pve1", False), {"memory": constant(0.5), "cpu": constant(0.25), "disk": constant(0.5)}
    )

    ct = model.ct_usage_at(101, START + 1)

    assert ct is not None
    assert (ct.mem_bytes, ct.cpu_fraction, ct.disk_bytes) == (0, 0.0, 4 * GIB)
    assert model.node_usage_at("pve1", START + 1).mem_bytes == int(0.1 * 32 * GIB)


def test_past_usage_follows_the_placement_at_that_time(model: UsageModel) -> None:
    profiles = {"memory": constant(0.5)}
    model.add_ct(101, placement(START, "pve1", True), profiles)
    model.place_ct(101, placement(START + 100, "pve1", False))
    model.place_ct(101, placement(START + 160, "pve2", True))

    assert model.node_usage_at("pve1", START + 50).running_cts == 1
    assert model.node_usage_at("pve1", START + 120).running_cts == 0
    assert model.node_usage_at("pve2", START + 120).running_cts == 0
    assert model.node_usage_at("pve2", START + 200).running_cts == 1
    assert model.node_usage_at("pve1", START + 200).running_cts == 0


def test_profile_changes_apply_from_their_time_on(model: UsageModel) -> None:
    model.add_ct(101, placement(START, "pve1", True), {"memory": constant(0.25)})
    model.set_ct_profile(101, "memory", constant(0.75), START + 60)

    early = model.ct_usage_at(101, START + 30)
    late = model.ct_usage_at(101, START + 90)

    assert early is not None and late is not None
    assert (early.mem_bytes, late.mem_bytes) == (256 * MIB, 768 * MIB)


def test_profiles_are_evaluated_on_simulated_seconds_since_start(model: UsageModel) -> None:
    step = StepProfile.model_validate({"type": "step", "before": 0.1, "at": 300, "after": 0.9})
    model.add_ct(101, placement(START + 100, "pve1", True), {"cpu": step})

    before = model.ct_usage_at(101, START + 299)
    after = model.ct_usage_at(101, START + 300)

    assert before is not None and after is not None
    assert (before.cpu_fraction, after.cpu_fraction) == (0.1, 0.9)


def test_ct_exists_only_between_creation_and_removal(model: UsageModel) -> None:
    model.add_ct(101, placement(START + 10, "pve1", True), {})
    model.remove_ct(101, START + 20)

    assert model.ct_usage_at(101, START + 5) is None
    assert model.ct_usage_at(101, START + 15) is not None
    assert model.ct_usage_at(101, START + 25) is None
    assert model.node_usage_at("pve1", START + 25).running_cts == 0


def test_node_usage_is_capped_at_its_capacity(model: UsageModel) -> None:
    big = Placement(START, "pve1", True, cpus=8.0, maxmem_bytes=64 * GIB, maxdisk_bytes=GIB, storage=None)
    model.add_ct(101, big, {"memory": constant(1.0), "cpu": constant(1.0)})

    usage = model.node_usage_at("pve1", START)

    assert usage.mem_bytes == 32 * GIB
    assert usage.cpu_fraction == 1.0


def test_aggregate_view_matches_per_node_evaluation(model: UsageModel) -> None:
    for vmid, node in ((101, "pve1"), (102, "pve2"), (103, "pve2")):
        model.add_ct(vmid, placement(START, node, True), {"memory": constant(0.3), "cpu": constant(0.2)})

    cts, nodes = model.nodes_usage_at(START + 5, [101, 102, 103])

    assert set(cts) == {101, 102, 103}
    assert nodes["pve2"] == model.node_usage_at("pve2", START + 5)
    assert nodes["pve1"] == model.node_usage_at("pve1", START + 5)


def test_unknown_metric_is_refused(model: UsageModel) -> None:
    model.add_ct(101, placement(START, "pve1", True), {})

    with pytest.raises(ValueError, match="unknown metric 'swap'"):
        model.set_ct_profile(101, "swap", constant(0.1), START)

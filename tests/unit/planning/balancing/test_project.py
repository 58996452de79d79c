"""``project``: what the snapshot looks like once actions are done (and that re-projecting is harmless)."""

from __future__ import annotations

from pve_operator.planning.actions import MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.balancing import project
from pve_operator.planning.model import ClusterSnapshot, ContainerStatus, Metric
from pve_operator.planning.ownership import OFFLOADED_TAG
from tests.builders import GIB, MIB, build_ct, build_node


def cluster() -> ClusterSnapshot:
    running = build_ct(101, "a", memory_used_mib=4096, cores=2, cpu=0.5, disk_used_gib=10)
    stopped = build_ct(102, "a", status=ContainerStatus.STOPPED, tags=frozenset({OFFLOADED_TAG}), disk_used_gib=6)
    return ClusterSnapshot.of(
        0.0,
        [
            # a: 2 GiB host + 4 GiB CT 101; CPU 1 core of 8 from 101 plus 0.4; disk 20 + 10 + 6.
            build_node("a", memory_used_gib=6, cpu=1.4 / 8, disk_used_gib=36),
            build_node("b", memory_used_gib=2, cpu=0.1, disk_used_gib=20),
        ],
        [running, stopped],
    )


def migrate(vmid: int, target: str = "b") -> MigrateContainer:
    return MigrateContainer(vmid, "a", target, True, "test", 0, 0, 0, 0)


def test_a_migration_moves_exactly_the_cts_usage() -> None:
    before = cluster()
    after = project(before, [migrate(101)])
    a, b = after.nodes["a"], after.nodes["b"]
    assert a.memory_used_bytes == 2 * GIB and b.memory_used_bytes == 6 * GIB
    assert a.disk_used_bytes == 26 * GIB and b.disk_used_bytes == 30 * GIB
    assert abs(a.cpu_used_fraction - 0.4 / 8) < 1e-12 and abs(b.cpu_used_fraction - (0.8 + 1) / 8) < 1e-12
    assert after.containers[101].node == "b"
    assert before.nodes["a"].memory_used_bytes == 6 * GIB, "the input snapshot is not modified"


def test_an_offload_frees_memory_and_cpu_but_not_disk() -> None:
    after = project(cluster(), [OffloadContainer(101, "a", "test", 0, 0)])
    a = after.nodes["a"]
    assert a.memory_used_bytes == 2 * GIB and a.disk_used_bytes == 36 * GIB
    assert abs(a.cpu_used_fraction - 0.4 / 8) < 1e-12
    ct = after.containers[101]
    assert ct.status is ContainerStatus.STOPPED and ct.memory_used_bytes == 0 and OFFLOADED_TAG in ct.tags


def test_a_restore_elsewhere_moves_the_disk_and_starts_with_the_expected_usage() -> None:
    restore = RestoreContainer(102, "a", "b", "test", 3 * GIB, 0.25, 0, 0, 0, 0)
    after = project(cluster(), [restore])
    a, b = after.nodes["a"], after.nodes["b"]
    assert a.disk_used_bytes == 30 * GIB and b.disk_used_bytes == 26 * GIB
    assert b.memory_used_bytes == 5 * GIB and a.memory_used_bytes == 6 * GIB
    assert abs(b.used_fraction(Metric.CPU) - (0.8 + 0.25) / 8) < 1e-12
    ct = after.containers[102]
    assert ct.running and ct.node == "b" and ct.memory_used_bytes == 3 * GIB and OFFLOADED_TAG not in ct.tags


def test_projecting_over_a_snapshot_that_already_shows_the_action_changes_nothing() -> None:
    actions = [migrate(101), RestoreContainer(102, "a", "a", "test", 512 * MIB, 0.1, 0, 0, 0, 0)]
    once = project(cluster(), actions)
    assert project(once, actions) == once
    assert project(once, [OffloadContainer(999, "a", "gone", 0, 0)]) == once, "unknown CTs are skipped"

"""Seeding a node's samples from its RRD after a restart (issue 10: "a restarted operator waits
sustainedSamples new samples before acting")."""

from __future__ import annotations

from pve_operator.planning.balancing.rrd_history import PressureSamples, recent_samples, row_fraction
from pve_operator.planning.model import Metric, WeightedMetric

GIB = 1024**3
NOW = 1_000_000.0


def row(minutes_ago: int, *, cpu: float = 0.2, mem_gib: float = 24.0, **extra: float) -> dict[str, float]:
    return {"time": NOW - 60 * minutes_ago, "cpu": cpu, "memused": mem_gib * GIB, "memtotal": 32 * GIB, **extra}


def test_memory_and_cpu_come_from_the_rows_oldest_first() -> None:
    rows = [row(3, mem_gib=16), row(2, mem_gib=28), row(1, mem_gib=30, cpu=0.9)]
    assert recent_samples(rows, Metric.MEMORY, 2, NOW) == [0.875, 0.9375]
    assert recent_samples(rows, Metric.CPU, 3, NOW) == [0.2, 0.2, 0.9]


def test_a_weighted_metric_without_disk_is_read_and_one_with_disk_is_not() -> None:
    assert row_fraction(row(1, cpu=0.5, mem_gib=16), WeightedMetric(memory=1, cpu=1, disk=0)) == 0.5
    assert row_fraction(row(1), WeightedMetric(memory=1, cpu=1, disk=1)) is None


def test_disk_and_max_are_not_read_from_the_root_file_system() -> None:
    rows = [row(1, rootused=90.0, roottotal=100.0)]
    assert recent_samples(rows, Metric.DISK, 2, NOW) == []
    assert recent_samples(rows, Metric.MAX, 2, NOW) == []


def test_rows_that_are_not_recent_seed_nothing() -> None:
    # The node stopped reporting 10 minutes ago: its old rows say nothing about now.
    assert recent_samples([row(12), row(11), row(10)], Metric.MEMORY, 2, NOW) == []


def test_rows_without_data_are_skipped_and_pressure_is_a_percent_column() -> None:
    rows = [{"time": NOW - 180}, row(2, pressurecpusome=30.0), {"time": NOW - 60}, row(0, pressurecpusome=45.5)]
    assert recent_samples(rows, Metric.MEMORY, 5, NOW) == [0.75, 0.75]
    assert recent_samples(rows, "pressurecpusome", 5, NOW) == [0.30, 0.455]
    assert recent_samples(rows, "pressurememorysome", 5, NOW) == []


def test_pressure_samples_count_each_rrd_minute_once_and_none_from_before_a_move() -> None:
    samples = PressureSamples()
    samples.seed("a", [(NOW - 120, 0.3), (NOW - 60, 0.4)])
    samples.record("a", NOW - 60, 0.4)  # the seeded minute read again
    samples.record("a", NOW, 0.5)
    assert samples.history() == {"a": (0.3, 0.4, 0.5)}
    samples.forget("a", moved_at=NOW + 10)  # a move off a ended 10 s into the next minute
    samples.record("a", NOW + 60, 0.5)  # that minute began before the move ended
    assert samples.history() == {}
    samples.record("a", NOW + 120, 0.1)
    samples.record("b", NOW + 120, 0.0)
    assert samples.history() == {"a": (0.1,), "b": (0.0,)}
    assert samples.history(excluding={"b"}) == {"a": (0.1,)}

"""A node's recent samples from its Proxmox VE RRD, so a restarted operator does not start blind.

The operator keeps each node's samples in memory (``sustainedSamples`` of them must all be above a
threshold before it acts). A restarted operator, or a new replica taking over, would otherwise wait
``sustainedSamples`` intervals before it could act on a node that has been overloaded all along.
Proxmox VE keeps what is needed: ``/nodes/{node}/rrddata?timeframe=hour`` holds one-minute averages
of the node's CPU, memory and root file system (pve-cluster ``RRD.pm``; columns ``cpu``, ``memused``,
``memtotal``, ``pressure*`` on PVE 9).

What can be read from it: memory (``memused / memtotal``), CPU (``cpu``, a fraction of all cores) and
their weighted means, and the pressure columns. Disk cannot: the pool's disk figure is the node's CT
storage (``local-lvm`` and the like), the RRD's ``root*`` columns are the host's root file system, so
pools on ``disk``, ``max`` or a weighted metric with a disk weight start with no history, as before.

The rows are one-minute averages, the operator's own samples are instants ``intervalSeconds`` apart:
a sustained overload shows in both, and a spike shorter than a minute is diluted in the rows (so a
restart never makes the operator act on less than it would have otherwise).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pve_operator.planning.model import Metric, UsageMeasure, WeightedMetric

#: Rows older than this (seconds before now) are not "recent": the RRD's newest row is at most a minute
#: and pvestatd's broadcast interval old; more means the node stopped reporting.
MAX_ROW_AGE_SECONDS = 180.0

#: Seconds one row of ``timeframe=hour`` averages: the row stamped T covers (T - 60, T].
RRD_ROW_SECONDS = 60.0


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def newest(rows: Iterable[Mapping[str, Any]], key: str) -> tuple[float, float] | None:
    """``(time, value)`` of the newest row that has column ``key``, or None (no such column: e.g. the
    pressure columns on PVE 8; or no data yet)."""
    found: tuple[float, float] | None = None
    for row in rows:
        when, value = _number(row, "time"), _number(row, key)
        if when is not None and value is not None and (found is None or when > found[0]):
            found = (when, value)
    return found


def row_fraction(row: Mapping[str, Any], metric: UsageMeasure) -> float | None:
    """The row's figure in ``metric`` (0..1), or None when the row cannot give it."""
    cpu = _number(row, "cpu")
    used, total = _number(row, "memused"), _number(row, "memtotal")
    memory = used / total if used is not None and total else None
    if isinstance(metric, WeightedMetric):
        if metric.disk > 0 or (metric.memory > 0 and memory is None) or (metric.cpu > 0 and cpu is None):
            return None
        return metric.combine(memory or 0.0, cpu or 0.0, 0.0)
    if metric is Metric.MEMORY:
        return memory
    if metric is Metric.CPU:
        return cpu
    return None  # disk, max: the RRD has the root file system, not the CT storage the pool measures


def recent_samples(
    rows: Iterable[Mapping[str, Any]],
    figure: str | UsageMeasure,
    count: int,
    now: float,
    max_age_seconds: float = MAX_ROW_AGE_SECONDS,
) -> list[float]:
    """The last ``count`` rows' figures, oldest first: ``figure`` is the pool's measure (fractions) or an
    RRD column holding percent (``pressurecpusome``, ...; returned as fractions). Empty when the newest
    usable row is older than ``max_age_seconds`` or no row has the figure."""
    return [value for _, value in recent_rows(rows, figure, count, now, max_age_seconds)]


def recent_rows(
    rows: Iterable[Mapping[str, Any]],
    figure: str | UsageMeasure,
    count: int,
    now: float,
    max_age_seconds: float = MAX_ROW_AGE_SECONDS,
) -> list[tuple[float, float]]:
    """:func:`recent_samples` with each row's time: ``(time, figure)``, oldest first."""
    usable: list[tuple[float, float]] = []
    for row in rows:
        when = _number(row, "time")
        if when is None:
            continue
        if isinstance(figure, Metric | WeightedMetric):  # Metric is a StrEnum: test it before str
            value = row_fraction(row, figure)
        else:
            percent = _number(row, figure)
            value = percent / 100 if percent is not None else None
        if value is not None:
            usable.append((when, max(0.0, value)))
    usable.sort()
    if not usable or now - usable[-1][0] > max_age_seconds or count < 1:
        return []
    return usable[-count:]


class PressureSamples:
    """A pool's pressure samples per node (fractions, oldest first): one per RRD row, never one from a
    minute that began before a move off or onto the node ended.

    The newest RRD row averages a whole minute, so a cycle that reads the row an earlier cycle read adds
    nothing (``sustainedSamples`` samples are that many distinct minutes), and after a move the node's
    samples go and rows whose minute began before the move ended are skipped: they show the pressure the
    move was meant to end. Mutable, kept by the operator between cycles; no I/O.
    """

    def __init__(self, length: int = 60) -> None:
        self.length = length
        self.samples: dict[str, deque[float]] = {}
        self._row_time: dict[str, float] = {}
        self._not_before: dict[str, float] = {}

    def seed(self, node: str, rows: Sequence[tuple[float, float]]) -> None:
        """Start ``node``'s samples with ``(time, fraction)`` rows, oldest first."""
        if rows:
            self.samples[node] = deque((value for _, value in rows), maxlen=self.length)
            self._row_time[node] = rows[-1][0]

    def record(self, node: str, row_time: float, fraction: float) -> None:
        """The newest row's figure, unless that minute was sampled already or began before a move ended."""
        if row_time <= self._row_time.get(node, float("-inf")) or row_time < self._not_before.get(node, float("-inf")):
            return
        self._row_time[node] = row_time
        self.samples.setdefault(node, deque(maxlen=self.length)).append(max(0.0, fraction))

    def drop(self, node: str) -> None:
        """No samples for ``node`` (offline, unreadable, no pressure column)."""
        self.samples.pop(node, None)

    def forget(self, node: str, moved_at: float) -> None:
        """A move off or onto ``node`` ended at ``moved_at``."""
        self.samples.pop(node, None)
        self._not_before[node] = max(self._not_before.get(node, 0.0), moved_at + RRD_ROW_SECONDS)

    def clear(self) -> None:
        self.samples.clear()

    def history(self, excluding: Iterable[str] = ()) -> dict[str, tuple[float, ...]]:
        """The samples for the planner, without ``excluding`` (nodes a migration is under way on)."""
        skip = frozenset(excluding)
        return {node: tuple(values) for node, values in self.samples.items() if node not in skip}

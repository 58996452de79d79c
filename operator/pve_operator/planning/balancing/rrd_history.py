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

from collections.abc import Iterable, Mapping
from typing import Any

from pve_operator.planning.model import Metric, UsageMeasure, WeightedMetric

#: Rows older than this (seconds before now) are not "recent": the RRD's newest row is at most a minute
#: and pvestatd's broadcast interval old; more means the node stopped reporting.
MAX_ROW_AGE_SECONDS = 180.0


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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

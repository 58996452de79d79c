"""RRD history as PVE serves it from ``/nodes/{node}/rrddata`` and ``/nodes/{node}/lxc/{vmid}/rrddata``.

The simulator keeps no round-robin database: the load model can be evaluated at any past instant,
so a request is answered by sampling it at the instants PVE's RRD would hold and consolidating the
samples per row. What has to match PVE is the *shape*: which rows, which timestamps, which keys.

How PVE builds the answer (pve-cluster ``src/PVE/RRD.pm`` ``create_rrd_data`` and
``src/pmxcfs/status.c`` at 7091d92e, 9.1.6; rrdtool ``src/rrd_fetch.c`` and the Perl binding
``RRDs.xs``):

* pmxcfs creates every RRD with a 60 s step and archives (RRAs) for AVERAGE and MAX of 1 min x 1440,
  30 min x 1440, 6 h x 1440 and 1 week x 570 rows (``rrd_def_node_pve9_0``, ``rrd_def_vm_pve9_0``;
  xff 0.5).
* ``create_rrd_data`` maps the ``timeframe`` to ``[resolution, count]`` (PVE 9: hour 60 s x 60,
  day 60 s x 1440, week 30 min x 336, month 30 min x 1440, year 6 h x 1440, decade 1 week x 570;
  before PVE 9 the ``pve2`` files used hour 60 s x 70, day 30 min x 70, week 3 h x 70, month 12 h x 70,
  year 1 week x 70), computes ``ctime = resolution * int(now / resolution)`` and fetches
  ``-s ctime - resolution * count -e ctime - 1 -r resolution``.
* rrd_fetch aligns start down and end up to the step; ``RRDs::fetch`` then returns one row per step
  with timestamps ``start + step .. end``: exactly ``count`` rows, the newest stamped ``ctime``. A row
  stamped ``T`` consolidates the interval ``(T - step, T]`` (rrdtool's convention).
* Unknown values (no data yet) are left out of the row, so a row from before the RRD existed is just
  ``{"time": T}``; since pve-cluster 6126f5d (fix #6615) a trailing row with only ``time`` is dropped.
* ``cf`` defaults to AVERAGE. Node RRDs accept ``decade`` too; the lxc endpoint's schema does not
  (the API layer validates the enum per endpoint).

Rate columns (``netin``, ``netout``, ``diskread``, ``diskwrite``) are RRD ``DERIVE`` sources: the
RRD stores bytes per second, not the byte counters ``status/current`` shows, so ``sample`` should
return rates for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple


class RrdArchive(NamedTuple):
    """What a timeframe reads: one row per ``step_seconds``, ``rows`` rows."""

    step_seconds: int
    rows: int


RRD_TIMEFRAMES_PVE9: Final[Mapping[str, RrdArchive]] = {
    "hour": RrdArchive(60, 60),
    "day": RrdArchive(60, 1440),
    "week": RrdArchive(30 * 60, 336),
    "month": RrdArchive(30 * 60, 1440),
    "year": RrdArchive(6 * 3600, 1440),
    "decade": RrdArchive(7 * 86400, 570),
}
"""PVE 9 (``pve-node-9.0``/``pve-vm-9.0`` RRD files): ``$setup`` in pve-cluster ``RRD.pm``."""

RRD_TIMEFRAMES_PVE8: Final[Mapping[str, RrdArchive]] = {
    "hour": RrdArchive(60, 70),
    "day": RrdArchive(30 * 60, 70),
    "week": RrdArchive(3 * 3600, 70),
    "month": RrdArchive(12 * 3600, 70),
    "year": RrdArchive(7 * 86400, 70),
}
"""PVE 8 and older (``pve2-*`` RRD files): ``$setup`` in pve-cluster ``RRD.pm`` before 1a483ba."""

CONSOLIDATION_FUNCTIONS: Final[tuple[str, ...]] = ("AVERAGE", "MAX")
"""The ``cf`` values the rrddata endpoints accept."""

NODE_RRD_KEYS: Final[tuple[str, ...]] = (
    "loadavg",
    "maxcpu",
    "cpu",
    "iowait",
    "memtotal",
    "memused",
    "swaptotal",
    "swapused",
    "roottotal",
    "rootused",
    "netin",
    "netout",
    "memavailable",
    "arcsize",
    "pressurecpusome",
    "pressureiosome",
    "pressureiofull",
    "pressurememorysome",
    "pressurememoryfull",
)
"""Data sources of a PVE 9 node RRD, in file order (``rrd_def_node_pve9_0``).

Units: ``cpu`` and ``iowait`` are fractions of all cores, ``maxcpu`` is the core count, ``loadavg``
the 1-minute load, memory/swap/root/arcsize values are bytes, ``netin``/``netout`` bytes per second,
``pressure*`` PSI percentages (avg10).
"""

NODE_RRD_KEYS_PVE8: Final[tuple[str, ...]] = NODE_RRD_KEYS[:12]
"""The twelve data sources of a ``pve2-node`` RRD (PVE 8 and older)."""

CT_RRD_KEYS: Final[tuple[str, ...]] = (
    "maxcpu",
    "cpu",
    "maxmem",
    "mem",
    "maxdisk",
    "disk",
    "netin",
    "netout",
    "diskread",
    "diskwrite",
    "memhost",
    "pressurecpusome",
    "pressurecpufull",
    "pressureiosome",
    "pressureiofull",
    "pressurememorysome",
    "pressurememoryfull",
)
"""Data sources of a PVE 9 guest RRD, in file order (``rrd_def_vm_pve9_0``).

Units: ``cpu`` is a fraction of ``maxcpu`` (the CT's cores), memory and disk values are bytes,
``netin``/``netout``/``diskread``/``diskwrite`` bytes per second, ``pressure*`` PSI percentages.
"""

CT_RRD_KEYS_PVE8: Final[tuple[str, ...]] = CT_RRD_KEYS[:10]
"""The ten data sources of a ``pve2-vm`` RRD (PVE 8 and older)."""

STORAGE_RRD_KEYS: Final[tuple[str, ...]] = ("total", "used")
"""Data sources of a storage RRD (bytes)."""

Sample = Callable[[float], Mapping[str, float]]
"""The load model at one simulated epoch second: metric key -> value (see the ``*_RRD_KEYS``)."""


def has_pve9_rrd(pve_version: str) -> bool:
    """Whether a PVE version string such as ``"9.1.2"`` writes the PVE 9 RRD files (``pve-*-9.0``)."""
    major_text = pve_version.split(".", 1)[0]
    if not major_text.isdigit():
        raise ValueError(f"not a PVE version: {pve_version!r}")
    return int(major_text) >= 9


def rrd_timeframes(pve_version: str) -> Mapping[str, RrdArchive]:
    """The timeframe table for a PVE version string such as ``"9.1.2"`` (PVE 9 layout from 9 on)."""
    return RRD_TIMEFRAMES_PVE9 if has_pve9_rrd(pve_version) else RRD_TIMEFRAMES_PVE8


def node_rrd_keys(pve_version: str) -> tuple[str, ...]:
    """The data sources of a node RRD for a PVE version (no ``memavailable``, ``arcsize`` or PSI before 9)."""
    return NODE_RRD_KEYS if has_pve9_rrd(pve_version) else NODE_RRD_KEYS_PVE8


def ct_rrd_keys(pve_version: str) -> tuple[str, ...]:
    """The data sources of a guest RRD for a PVE version (no ``memhost`` or PSI before 9)."""
    return CT_RRD_KEYS if has_pve9_rrd(pve_version) else CT_RRD_KEYS_PVE8


def only_keys(sample: Sample, keys: tuple[str, ...]) -> Sample:
    """``sample`` restricted to ``keys`` (the data sources an RRD file of that layout has)."""
    wanted = frozenset(keys)

    def restricted(epoch: float) -> Mapping[str, float]:
        return {key: value for key, value in sample(epoch).items() if key in wanted}

    return restricted


def rrd_rows(
    timeframe: str,
    cf: str,
    now_epoch: float,
    start_epoch: float,
    sample: Sample,
    subsamples: int = 4,
    *,
    timeframes: Mapping[str, RrdArchive] = RRD_TIMEFRAMES_PVE9,
) -> list[dict[str, float | int]]:
    """The rows PVE returns for ``timeframe`` and ``cf`` at ``now_epoch``, oldest first.

    Each row is ``{"time": T, **metrics}``: ``T`` is a step-aligned epoch (int) and the metrics are
    ``sample`` evaluated at ``subsamples`` evenly spaced instants inside ``(T - step, T]`` and
    consolidated with ``cf`` (mean for AVERAGE, maximum for MAX; a metric absent from some samples
    is consolidated over the samples that have it). ``start_epoch`` is when the simulated cluster
    began recording: instants before it are unknown, and like an RRD with xff 0.5 a row needs at
    least half of its samples known to carry data; otherwise it is only ``{"time": T}``. A trailing
    time-only row is dropped, as PVE does.

    Raises ``ValueError`` for an unknown timeframe or cf (the API layer reports those as parameter
    errors before calling this).
    """
    archive = timeframes.get(timeframe)
    if archive is None:
        raise ValueError(f"unknown RRD timeframe {timeframe!r} (one of {', '.join(timeframes)})")
    if cf not in CONSOLIDATION_FUNCTIONS:
        raise ValueError(f"unknown RRD consolidation function {cf!r} (AVERAGE or MAX)")
    if subsamples < 1:
        raise ValueError("subsamples must be at least 1")
    consolidate: Callable[[list[float]], float] = _mean if cf == "AVERAGE" else max
    step, count = archive
    newest = step * math.floor(now_epoch / step)
    # Sample at the middle of `subsamples` equal slices of (T - step, T].
    offsets = [step * (k + 0.5) / subsamples - step for k in range(subsamples)]
    needed = (subsamples + 1) // 2

    rows: list[dict[str, float | int]] = []
    for time_epoch in range(newest - (count - 1) * step, newest + 1, step):
        row: dict[str, float | int] = {"time": time_epoch}
        instants = [time_epoch + offset for offset in offsets if time_epoch + offset >= start_epoch]
        if len(instants) >= needed:
            collected: dict[str, list[float]] = {}
            for instant in instants:
                for key, value in sample(instant).items():
                    collected.setdefault(key, []).append(value)
            for key, values in collected.items():
                row[key] = consolidate(values)
        rows.append(row)
    if rows and len(rows[-1]) == 1:
        rows.pop()
    return rows


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


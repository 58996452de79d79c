"""RRD rows: the timestamps, row counts and consolidation a PVE client (and its graphs) relies on."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

import pytest

from pve_sim.rrd import (
    CT_RRD_KEYS,
    NODE_RRD_KEYS,
    RRD_TIMEFRAMES_PVE8,
    RRD_TIMEFRAMES_PVE9,
    rrd_rows,
    rrd_timeframes,
)

NOW = 1_767_225_600 + 3 * 86400 + 1234.5  # mid-step, days after the epoch below
LONG_AGO = 0.0  # the simulated cluster has existed "forever": every row carries data


def constant(_: float) -> Mapping[str, float]:
    return {"cpu": 0.25, "mem": 1024.0}


@pytest.mark.parametrize(
    ("timeframe", "step", "count"),
    [
        ("hour", 60, 60),
        ("day", 60, 1440),
        ("week", 1800, 336),
        ("month", 1800, 1440),
        ("year", 21600, 1440),
        ("decade", 604800, 570),
    ],
)
def test_pve9_rows_are_step_aligned_oldest_first_and_end_at_the_last_step(
    timeframe: str, step: int, count: int
) -> None:
    rows = rrd_rows(timeframe, "AVERAGE", NOW, LONG_AGO, constant)
    times = [row["time"] for row in rows]
    assert len(rows) == count
    assert all(isinstance(t, int) and t % step == 0 for t in times)
    assert times[-1] == step * int(NOW // step)
    assert all(later - earlier == step for earlier, later in pairwise(times))


def test_pve8_layout_has_70_rows_per_timeframe() -> None:
    table = rrd_timeframes("8.4.1")
    assert table is RRD_TIMEFRAMES_PVE8
    rows = rrd_rows("hour", "AVERAGE", NOW, LONG_AGO, constant, timeframes=table)
    assert len(rows) == 70
    assert rows[-1]["time"] - rows[0]["time"] == 69 * 60
    assert rrd_rows("year", "MAX", NOW, LONG_AGO, constant, timeframes=table)[1]["time"] % (7 * 86400) == 0
    assert rrd_timeframes("9.1.2") is RRD_TIMEFRAMES_PVE9


def test_rows_carry_every_sampled_metric() -> None:
    rows = rrd_rows("hour", "AVERAGE", NOW, LONG_AGO, constant)
    assert all(row == {"time": row["time"], "cpu": 0.25, "mem": 1024.0} for row in rows)


def test_average_and_max_consolidate_within_each_step() -> None:
    step_end = 60 * int(NOW // 60)

    def spike_in_newest_step(t: float) -> Mapping[str, float]:
        # Busy during the second half of the newest step only.
        return {"cpu": 1.0 if t > step_end - 30 else 0.0}

    average = rrd_rows("hour", "AVERAGE", NOW, LONG_AGO, spike_in_newest_step)
    maximum = rrd_rows("hour", "MAX", NOW, LONG_AGO, spike_in_newest_step)
    assert average[-1]["cpu"] == pytest.approx(0.5)
    assert maximum[-1]["cpu"] == 1.0
    assert average[-2]["cpu"] == maximum[-2]["cpu"] == 0.0


def test_a_row_covers_the_step_before_its_timestamp() -> None:
    sampled: list[float] = []

    def record(t: float) -> Mapping[str, float]:
        sampled.append(t)
        return {"cpu": 0.0}

    rows = rrd_rows("hour", "AVERAGE", NOW, LONG_AGO, record, subsamples=4)
    newest = int(rows[-1]["time"])
    last_four = sampled[-4:]
    assert all(newest - 60 < t <= newest for t in last_four)
    assert len(sampled) == 4 * len(rows)


def test_rows_before_the_simulator_started_carry_only_time() -> None:
    start = NOW - 10 * 60  # ten minutes of history
    rows = rrd_rows("hour", "AVERAGE", NOW, start, constant)
    assert len(rows) == 60
    with_data = [row for row in rows if len(row) > 1]
    without = [row for row in rows if len(row) == 1]
    assert len(with_data) == 10
    assert all(set(row) == {"time"} for row in without)
    assert all(row["time"] < with_data[0]["time"] for row in without)
    assert all(row["time"] > start for row in with_data)


def test_a_row_needs_half_of_its_step_recorded() -> None:
    step_end = 60 * int(NOW // 60)
    # Started 40 s into the step before the newest: 20 s of 60 recorded, too little for data.
    rows = rrd_rows("hour", "AVERAGE", NOW, step_end - 80, constant)
    assert set(rows[-2]) == {"time"}
    assert rows[-1]["cpu"] == 0.25
    # Started 20 s into it: 40 s recorded, enough.
    rows = rrd_rows("hour", "AVERAGE", NOW, step_end - 100, constant)
    assert rows[-2]["cpu"] == 0.25


def test_a_simulator_younger_than_one_step_drops_the_empty_newest_row() -> None:
    rows = rrd_rows("hour", "AVERAGE", NOW, NOW - 5, constant)
    assert len(rows) == 59
    assert all(set(row) == {"time"} for row in rows)


def test_samples_never_come_from_the_future() -> None:
    seen: list[float] = []

    def record(t: float) -> Mapping[str, float]:
        seen.append(t)
        return {"cpu": 0.1}

    rrd_rows("day", "MAX", NOW, LONG_AGO, record)
    assert max(seen) <= NOW


@pytest.mark.parametrize(
    ("timeframe", "cf", "message"),
    [("fortnight", "AVERAGE", "timeframe"), ("hour", "MIN", "consolidation"), ("hour", "average", "consolidation")],
)
def test_unknown_timeframe_or_cf_is_an_error(timeframe: str, cf: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rrd_rows(timeframe, cf, NOW, LONG_AGO, constant)


def test_decade_does_not_exist_before_pve9() -> None:
    with pytest.raises(ValueError, match="timeframe"):
        rrd_rows("decade", "AVERAGE", NOW, LONG_AGO, constant, timeframes=RRD_TIMEFRAMES_PVE8)


def test_metric_key_lists_match_pve() -> None:
    for key in ("cpu", "maxcpu", "memtotal", "memused", "swaptotal", "swapused", "roottotal", "rootused",
                "loadavg", "netin", "netout", "iowait", "memavailable"):
        assert key in NODE_RRD_KEYS
    assert set(CT_RRD_KEYS) >= {
        "cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "netin", "netout", "diskread", "diskwrite",
    }
    assert len(NODE_RRD_KEYS) == 19 and len(CT_RRD_KEYS) == 17  # pmxcfs *_pve9_0_columns

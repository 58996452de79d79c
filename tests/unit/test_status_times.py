"""One time format for everything status records (RFC 3339, UTC, whole seconds: metav1.Time), written and
read in one place (issue 10: the format was written out by hand in six places)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pve_operator.api.v1alpha1.common import format_epoch, format_timestamp, parse_epoch


def test_times_are_written_in_utc_with_whole_seconds() -> None:
    moment = datetime(2026, 12, 3, 8, 41, 17, 654321, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-12-03T07:41:17Z"
    assert format_epoch(moment.timestamp()) == "2026-12-03T07:41:17Z"


def test_what_is_written_reads_back_and_anything_else_is_none() -> None:
    epoch = datetime(2026, 12, 3, 7, 41, 17, tzinfo=UTC).timestamp()
    assert parse_epoch(format_epoch(epoch)) == epoch
    for bad in (None, "", "yesterday", "2026-12-03 07:41:17", 1_700_000_000):
        assert parse_epoch(bad) is None

"""The leader elector's decisions, with an injected clock and an in-memory Lease (no API server, no sleeping).

What is pinned: expiry is judged by when *this* process saw the record change (never by comparing the
record's wall-clock times with ours), a holder renews and a newcomer counts a transition, optimistic
concurrency decides between two candidates, a lost or unrenewable Lease ends the leader, and a release
hands the Lease over at once. tests/integration/test_leader_election.py runs the same against the API server.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pve_operator.leader_election import (
    LeaderElectionRecord,
    LeaderElector,
    LeaseConflict,
    LeaseTimings,
    lease_expired,
    may_acquire,
    next_record,
    released_record,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
TIMINGS = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    """Monotonic and wall clocks that move only when told; the wall clock may be set apart (skew)."""

    def __init__(self, skew: timedelta = timedelta(0)) -> None:
        self.now = 1000.0
        self.skew = skew

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now - 1000.0) + self.skew

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryLeaseStore:
    """A Lease with resourceVersion checks, as the API server does them; ``fail`` makes calls raise."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail: Exception | None = None
        self.writes = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def get(self, timeout: float) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise LeaseConflict("exists")
        return self._write(spec)

    def replace(self, resource_version: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._check()
        if self.lease is None or self.lease["metadata"]["resourceVersion"] != resource_version:
            raise LeaseConflict("stale resourceVersion")
        return self._write(spec)

    def _write(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": copy.deepcopy(spec)}
        return copy.deepcopy(self.lease)

    @property
    def record(self) -> LeaderElectionRecord:
        assert self.lease is not None
        return LeaderElectionRecord.from_spec(self.lease["spec"])


class Lost(Exception):
    pass


def elector(store: MemoryLeaseStore, identity: str, clock: Clock) -> LeaderElector:
    def lost(message: str) -> None:
        raise Lost(message)

    return LeaderElector(
        store,
        identity,
        TIMINGS,
        monotonic=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.advance,
        on_lost=lost,
    )


# -- pure functions -----------------------------------------------------------------------------------


def test_expiry_counts_from_when_the_record_was_observed() -> None:
    held = LeaderElectionRecord("a", 15, T0, T0, 0)
    assert not lease_expired(held, observed_at=100.0, now=114.9)
    assert lease_expired(held, observed_at=100.0, now=115.0)
    # Free and released records are free at once.
    assert lease_expired(LeaderElectionRecord(), observed_at=100.0, now=100.0)
    assert lease_expired(released_record(held, T0), observed_at=100.0, now=100.0)


def test_only_the_holder_may_write_an_unexpired_lease() -> None:
    held = LeaderElectionRecord("a", 15, T0, T0, 0)
    assert may_acquire(held, "a", observed_at=100.0, now=101.0)
    assert not may_acquire(held, "b", observed_at=100.0, now=101.0)
    assert may_acquire(held, "b", observed_at=100.0, now=116.0)


def test_next_record_renews_or_takes_over() -> None:
    first = next_record(None, "a", 15, T0)
    assert first == LeaderElectionRecord("a", 15, T0, T0, 0)
    later = T0 + timedelta(seconds=4)
    renewed = next_record(first, "a", 15, later)
    assert renewed == LeaderElectionRecord("a", 15, T0, later, 0), "acquireTime and transitions kept"
    taken = next_record(renewed, "b", 15, later)
    assert taken == LeaderElectionRecord("b", 15, later, later, 1)


def test_released_record_has_no_holder_and_keeps_the_transitions() -> None:
    record = released_record(LeaderElectionRecord("a", 15, T0, T0, 4), T0 + timedelta(seconds=9))
    assert record.holder_identity == "" and record.lease_duration_seconds == 1 and record.lease_transitions == 4
    assert "holderIdentity" not in record.to_spec()


def test_record_round_trips_through_the_lease_spec_with_micro_times() -> None:
    record = LeaderElectionRecord("a", 15, T0, T0.replace(microsecond=0), 2)
    spec = record.to_spec()
    assert spec["acquireTime"] == "2025-01-01T12:00:00.123456Z"
    assert spec["renewTime"] == "2025-01-01T12:00:00.000000Z", "six digits even at .000000 (MicroTime)"
    assert LeaderElectionRecord.from_spec(spec) == record


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, LeaseTimings(15, 10, 2)),
        (
            {
                "PVE_OPERATOR_LEASE_DURATION_SECONDS": "6",
                "PVE_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS": "4",
                "PVE_OPERATOR_LEASE_RETRY_PERIOD_SECONDS": "1",
            },
            LeaseTimings(6, 4, 1),
        ),
    ],
)
def test_timings_from_env(env: dict[str, str], expected: LeaseTimings) -> None:
    assert LeaseTimings.from_env(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"PVE_OPERATOR_LEASE_DURATION_SECONDS": "10"},  # not longer than the renew deadline
        {"PVE_OPERATOR_LEASE_RETRY_PERIOD_SECONDS": "9"},  # 1.2 x 9 > the renew deadline
        {"PVE_OPERATOR_LEASE_DURATION_SECONDS": "6.5"},  # a Lease counts whole seconds
        {"PVE_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS": "soon"},
    ],
)
def test_bad_timings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        LeaseTimings.from_env(env)


# -- the elector against an in-memory Lease -----------------------------------------------------------


def test_the_first_candidate_creates_the_lease_the_second_waits() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew() and a.is_leader
    assert store.record == LeaderElectionRecord("a", 15, clock.wall(), clock.wall(), 0)
    assert not b.try_acquire_or_renew() and not b.is_leader
    assert b.observed_record == store.record


def test_a_renewed_lease_never_expires_for_the_standby() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of renewals every 2 s, the standby polling in between
        clock.advance(1)
        assert not b.try_acquire_or_renew()
        clock.advance(1)
        assert a.renew_once()
    assert store.record.holder_identity == "a" and store.record.lease_transitions == 0


def test_expiry_ignores_the_wall_clock_of_the_record() -> None:
    """The leader's clock is an hour behind: its renewTime looks stale, but it changes, so it is alive."""
    clock, store = Clock(), MemoryLeaseStore()
    a = elector(store, "a", Clock(skew=timedelta(hours=-1)))
    a.monotonic = clock.monotonic  # same passage of time, another wall clock
    b = elector(store, "b", clock)
    a.try_acquire_or_renew()
    clock.advance(1)
    assert not b.try_acquire_or_renew(), "an hour-old renewTime is not an expired Lease"
    # And a leader an hour ahead does not make a dead Lease look alive for an hour.
    store2 = MemoryLeaseStore()
    ahead = elector(store2, "a", Clock(skew=timedelta(hours=1)))
    ahead.monotonic = clock.monotonic
    standby = elector(store2, "b", clock)
    ahead.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    clock.advance(15)
    assert standby.try_acquire_or_renew(), "15 s unchanged by our clock: expired, whatever renewTime says"


def test_the_standby_takes_over_a_dead_leader_within_the_lease_duration_plus_a_retry() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew()
    clock.advance(1.5)
    a.renew_once()  # the last renewal; then "a" dies
    died = clock.now
    clock.advance(0.5)
    assert b.acquire()  # polls every retry period through the injected sleep
    assert clock.now - died <= TIMINGS.lease_duration + 2 * TIMINGS.retry_period
    assert clock.now - b.observed_at >= 0
    assert store.record.holder_identity == "b" and store.record.lease_transitions == 1
    assert store.record.acquire_time == clock.wall()


def test_the_standby_counts_the_duration_from_its_first_sight_not_from_renew_time() -> None:
    """A standby started long after the leader died still waits a full duration (as client-go does)."""
    clock, store = Clock(), MemoryLeaseStore()
    elector(store, "a", clock).try_acquire_or_renew()
    clock.advance(3600)
    b = elector(store, "b", clock)
    assert not b.try_acquire_or_renew()
    clock.advance(14)
    assert not b.try_acquire_or_renew()
    clock.advance(1)
    assert b.try_acquire_or_renew()


def test_of_two_candidates_for_an_expired_lease_one_wins() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    elector(store, "a", clock).try_acquire_or_renew()
    b, c = elector(store, "b", clock), elector(store, "c", clock)
    assert not b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    clock.advance(15)
    # Both read the same expired record; the one that writes second has a stale resourceVersion.
    original_get = store.get
    snapshot = store.get(1)
    store.get = lambda timeout: copy.deepcopy(snapshot)  # type: ignore[method-assign]
    assert b.try_acquire_or_renew() is True
    assert c.try_acquire_or_renew() is False, "409: someone else won"
    store.get = original_get  # type: ignore[method-assign]
    assert store.record.holder_identity == "b" and store.record.lease_transitions == 1


def test_a_release_hands_over_at_the_next_retry() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(2)
    assert a.release() and not a.is_leader
    assert store.record.holder_identity == "" and store.record.lease_duration_seconds == 1
    assert b.try_acquire_or_renew(), "no waiting for expiry"
    assert store.record.holder_identity == "b" and store.record.lease_transitions == 1
    assert not a.release(), "only the holder releases"
    assert store.record.holder_identity == "b"


def test_a_leader_that_finds_another_holder_is_lost_at_once() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a = elector(store, "a", clock)
    a.try_acquire_or_renew()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "intruder"
    clock.advance(2)
    with pytest.raises(Lost, match="intruder holds it now"):
        a.renew_once()


def test_a_leader_that_cannot_renew_within_the_deadline_is_lost() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a = elector(store, "a", clock)
    a.try_acquire_or_renew()
    store.fail = ConnectionError("API server unreachable")
    for _ in range(4):  # 2, 4, 6, 8 s: retried, still within the 10 s deadline
        clock.advance(2)
        assert a.renew_once() is False
    clock.advance(2)
    with pytest.raises(Lost, match=r"not renewed for 10\.0 s"):
        a.renew_once()
    # The deadline ends the leader before a standby could see the Lease expire (15 s after its last renewal).
    assert TIMINGS.renew_deadline < TIMINGS.lease_duration


def test_a_transient_failure_within_the_deadline_is_survived() -> None:
    clock, store = Clock(), MemoryLeaseStore()
    a = elector(store, "a", clock)
    a.try_acquire_or_renew()
    store.fail = ConnectionError("blip")
    clock.advance(2)
    assert a.renew_once() is False
    store.fail = None
    clock.advance(2)
    assert a.renew_once() is True and a.is_leader


# -- the standby's probe endpoint (pve_operator.__main__) ---------------------------------------------


def test_standby_answers_the_liveness_path_and_frees_the_port_for_kopf() -> None:
    import socket
    import urllib.error
    import urllib.request

    from pve_operator.__main__ import standby_liveness

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/healthz"
    with standby_liveness(url):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert refused.value.code == 404
    with socket.socket() as kopf_port:  # what Kopf's aiohttp server does next, on the same port
        kopf_port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        kopf_port.bind(("127.0.0.1", port))


def test_a_local_run_keeps_its_own_objects_beside_the_first_watched_namespace() -> None:
    """``python -m pve_operator -n lab -n web`` puts its Lease and ownership key in ``lab``, unless
    PVE_OPERATOR_NAMESPACE (the Deployment's downward API) names the namespace; -A sets nothing."""
    from pve_operator.__main__ import keep_own_objects_beside_watched

    environ: dict[str, str] = {}
    keep_own_objects_beside_watched(["lab", "web"], environ)
    assert environ == {"PVE_OPERATOR_NAMESPACE": "lab"}
    deployed = {"PVE_OPERATOR_NAMESPACE": "pve-operator"}
    keep_own_objects_beside_watched(["lab"], deployed)
    assert deployed == {"PVE_OPERATOR_NAMESPACE": "pve-operator"}
    cluster_wide: dict[str, str] = {}
    keep_own_objects_beside_watched([], cluster_wide)
    assert cluster_wide == {}

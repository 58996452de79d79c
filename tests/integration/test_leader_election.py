"""Leader election against the real API server: two electors of pve_operator.leader_election in one process
(each with its own API client, as two replicas), short timings, real clocks.

* Exactly one leads, and keeps leading while it renews.
* A leader that stops renewing without releasing (as a killed process) is replaced no earlier than the
  Lease allows and within lease duration + 2 retry periods of its death.
* A release hands the Lease over at the standby's next retry.
* A leader that finds another holder in the Lease (holderIdentity edited by force) ends its process at
  once with exit code 3: run in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pve_operator.leader_election import (
    LEASE_LOST_EXIT_CODE,
    LEASE_NAME,
    KubeLeaseStore,
    LeaderElector,
    LeaseTimings,
)
from tests.fixtures.kube import KubeCluster, wait_for

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
TIMINGS = LeaseTimings(lease_duration=3, renew_deadline=2, retry_period=0.5)
SLACK_S = 1.0
"""API round trips and thread scheduling on a loaded CI machine."""


def _elector(kube: KubeCluster, namespace: str, identity: str) -> LeaderElector:
    from kubernetes import config as kube_config

    api_client = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))

    def lost(message: str) -> None:
        raise AssertionError(f"{identity} lost the Lease: {message}")

    return LeaderElector(KubeLeaseStore(namespace, api_client=api_client), identity, TIMINGS, on_lost=lost)


class Candidate:
    """An elector acquiring in a thread of its own; ``acquired_at`` (monotonic) once it leads."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.stop = threading.Event()
        self.acquired_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.elector.acquire(self.stop):
            self.acquired_at = time.monotonic()
            self.elector.start_renewing()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.elector.stop_renewing()


@pytest.fixture
def candidates(kube: KubeCluster, kube_namespace: str) -> Iterator[list[Candidate]]:
    started = [Candidate(_elector(kube, kube_namespace, name)) for name in ("replica-a", "replica-b")]
    try:
        yield started
    finally:
        for candidate in started:
            candidate.close()


def _lease(kube: KubeCluster, namespace: str) -> dict[str, Any]:
    lease = kube.kubectl_json("get", "lease", LEASE_NAME, "-n", namespace)
    assert isinstance(lease, dict)
    return lease


def _leaders(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.acquired_at is not None]


def test_exactly_one_leads_while_it_renews(kube: KubeCluster, kube_namespace: str, candidates: list[Candidate]) -> None:
    wait_for(lambda: _leaders(candidates), timeout_s=10, what="a leader")
    time.sleep(3 * TIMINGS.lease_duration)  # several lease durations: renewals keep the standby out
    (leader,) = _leaders(candidates)
    spec = _lease(kube, kube_namespace)["spec"]
    assert spec["holderIdentity"] == leader.elector.identity
    assert spec["leaseDurationSeconds"] == TIMINGS.lease_duration
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] < spec["renewTime"], "renewed since it was acquired"


def test_a_dead_leader_is_replaced_after_the_lease_expires_and_within_the_bound(
    kube: KubeCluster, kube_namespace: str, candidates: list[Candidate]
) -> None:
    wait_for(lambda: _leaders(candidates), timeout_s=10, what="a leader")
    (leader,) = _leaders(candidates)
    (standby,) = [c for c in candidates if c is not leader]
    time.sleep(2 * TIMINGS.retry_period)
    leader.elector.stop_renewing()  # dies: no release, the Lease stays as it was last renewed
    died = time.monotonic()

    wait_for(lambda: standby.acquired_at is not None, timeout_s=TIMINGS.takeover_bound + 5, what="takeover")
    assert standby.acquired_at is not None
    takeover = standby.acquired_at - died
    print(f"\ntakeover after the leader stopped renewing: {takeover:.2f} s (lease {TIMINGS.lease_duration} s)")
    # Not before the Lease could have expired (the last renewal was at most a retry period before the death) ...
    assert takeover >= TIMINGS.lease_duration - TIMINGS.retry_period
    # ... and within lease duration + 2 retry periods of it.
    assert takeover <= TIMINGS.takeover_bound + SLACK_S
    spec = _lease(kube, kube_namespace)["spec"]
    assert spec["holderIdentity"] == standby.elector.identity
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] or spec["acquireTime"] < spec["renewTime"]


def test_a_release_hands_over_at_the_next_retry(
    kube: KubeCluster, kube_namespace: str, candidates: list[Candidate]
) -> None:
    wait_for(lambda: _leaders(candidates), timeout_s=10, what="a leader")
    (leader,) = _leaders(candidates)
    (standby,) = [c for c in candidates if c is not leader]
    time.sleep(TIMINGS.retry_period)
    assert leader.elector.release()
    released = time.monotonic()
    wait_for(lambda: standby.acquired_at is not None, timeout_s=TIMINGS.lease_duration, what="takeover")
    assert standby.acquired_at is not None
    assert standby.acquired_at - released <= TIMINGS.retry_period + SLACK_S, "no waiting for the Lease to expire"
    spec = _lease(kube, kube_namespace)["spec"]
    assert spec["holderIdentity"] == standby.elector.identity and spec["leaseTransitions"] == 1


LEADER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from kubernetes import config as kube_config
    from pve_operator.leader_election import KubeLeaseStore, LeaderElector, LeaseTimings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    kubeconfig, namespace = sys.argv[1:3]
    store = KubeLeaseStore(namespace, api_client=kube_config.new_client_from_config(config_file=kubeconfig))
    elector = LeaderElector(store, "doomed-leader", LeaseTimings.from_env())
    elector.acquire()
    elector.start_renewing()
    print("LEADING", flush=True)
    time.sleep(120)
    print("STILL RUNNING", flush=True)
    """
)


def test_a_leader_whose_lease_was_taken_exits_at_once(kube: KubeCluster, kube_namespace: str) -> None:
    env = {
        **kube.env,
        "PYTHONPATH": str(REPO / "operator"),
        "PVE_OPERATOR_LEASE_DURATION_SECONDS": str(TIMINGS.lease_duration),
        "PVE_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS": str(TIMINGS.renew_deadline),
        "PVE_OPERATOR_LEASE_RETRY_PERIOD_SECONDS": str(TIMINGS.retry_period),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER_SCRIPT, str(kube.kubeconfig), kube_namespace],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        before = []
        for line in proc.stdout:  # the "acquired" log line, then LEADING
            before.append(line)
            if line.strip() == "LEADING":
                break
        assert any("leader election: acquired Lease" in line for line in before), before
        assert _lease(kube, kube_namespace)["spec"]["holderIdentity"] == "doomed-leader"
        kube.kubectl(
            "patch", "lease", LEASE_NAME, "-n", kube_namespace, "--type=merge",
            "-p", '{"spec": {"holderIdentity": "usurper"}}',
        )  # fmt: skip
        edited = time.monotonic()
        code = proc.wait(timeout=TIMINGS.renew_deadline + 10)
        exited_after = time.monotonic() - edited
        output = "".join(before) + proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == LEASE_LOST_EXIT_CODE, output
    assert exited_after <= TIMINGS.retry_period + SLACK_S, f"exited {exited_after:.1f} s after the edit"
    assert "CRITICAL leader election: lost Lease" in output and "usurper holds it now" in output, output
    assert "STILL RUNNING" not in output
    assert _lease(kube, kube_namespace)["spec"]["holderIdentity"] == "usurper", "the exiting leader wrote nothing"

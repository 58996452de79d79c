"""Leader election on a coordination.k8s.io/v1 Lease, so that two operator replicas never act at once.

Kopf's own peering is no leader election: operators with the same priority keep running side by side
(with a warning). This module does what client-go's ``leaderelection`` package does, with its defaults:

* One Lease, ``pve-operator-leader``, in the operator's own namespace (:func:`operator_namespace`).
  Its holder is the only process that runs Kopf; the other replica stands by and does nothing else.
* Acquiring: read the Lease. Free (no holder, or released), or expired, the process writes itself in as
  holder with ``resourceVersion`` set (optimistic concurrency): of two candidates one gets 409 Conflict and
  keeps waiting. Expired means: the record has not changed for ``leaseDurationSeconds`` (the record's own
  figure) *by this process's monotonic clock*, counted from when this process first saw the record as it
  is. Clocks of different machines are never compared; only rates of time matter.
* Holding: a daemon thread renews ``renewTime`` every retry period. When it cannot renew for a renew
  deadline (API server unreachable, 409s), or when it finds another holder in the Lease, it logs at
  CRITICAL and ends the process at once (``os._exit``): a leader that may have lost its Lease never keeps
  acting on Proxmox. The renew deadline is shorter than the lease duration, so the old leader is gone
  before any standby can see the Lease expire.
* Releasing: on a graceful exit (SIGTERM, ``kopf.run`` returning) the holder clears ``holderIdentity`` and
  sets ``leaseDurationSeconds`` to 1, so the standby takes over at its next retry instead of waiting for
  the Lease to expire.

Takeover after the leader dies: at most lease duration + 2 retry periods after its last renewal (the
standby sees that renewal within a retry period, counts the duration from then, and retries every
period); 15 + 2 x 2 = 19 s with the defaults, about lease duration + retry period typically.

Timings (seconds; client-go's defaults, overridable for tests):
``PVE_OPERATOR_LEASE_DURATION_SECONDS`` (15, an integer), ``PVE_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS``
(10), ``PVE_OPERATOR_LEASE_RETRY_PERIOD_SECONDS`` (2). They must keep lease duration > renew deadline >
1.2 x retry period, as client-go requires.

Kubernetes API calls made (deploy/*/rbac.yaml grants exactly these, on Leases in the operator's
namespace): ``get`` (:meth:`KubeLeaseStore.get`), ``create`` (:meth:`KubeLeaseStore.create`, the first
time) and ``update`` (:meth:`KubeLeaseStore.replace`: acquire, renew, release).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

LEASE_NAME = "pve-operator-leader"
DURATION_ENV = "PVE_OPERATOR_LEASE_DURATION_SECONDS"
RENEW_DEADLINE_ENV = "PVE_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS"
RETRY_PERIOD_ENV = "PVE_OPERATOR_LEASE_RETRY_PERIOD_SECONDS"
LEASE_LOST_EXIT_CODE = 3
"""The process's exit code when it stops being the leader without releasing (Kubernetes restarts it)."""
JITTER_FACTOR = 1.2
"""client-go's: the renew deadline must exceed this many retry periods."""

log = logging.getLogger(__name__)


class LeaseConflict(Exception):
    """409 on create or update: someone else wrote the Lease first."""


# ---------------------------------------------------------------------------------------------------------
# Timings and the record


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if self.lease_duration < 1:
            raise ValueError(f"{DURATION_ENV}: lease duration must be at least 1 s, not {self.lease_duration}")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"the lease duration ({self.lease_duration} s) must be longer than the renew deadline "
                f"({self.renew_deadline} s)"
            )
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period or self.retry_period <= 0:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline} s) must be longer than {JITTER_FACTOR} x the retry "
                f"period ({self.retry_period} s), and the retry period positive"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LeaseTimings:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number of seconds") from None

        duration = number(DURATION_ENV, defaults.lease_duration)
        if duration != int(duration):
            raise ValueError(f"{DURATION_ENV}={duration}: whole seconds (a Lease counts in seconds)")
        return cls(
            lease_duration=int(duration),
            renew_deadline=number(RENEW_DEADLINE_ENV, defaults.renew_deadline),
            retry_period=number(RETRY_PERIOD_ENV, defaults.retry_period),
        )

    @property
    def takeover_bound(self) -> float:
        """Worst case from the leader's death to a standby's acquisition (API latency aside)."""
        return self.lease_duration + 2 * self.retry_period


@dataclass(frozen=True)
class LeaderElectionRecord:
    """The Lease's spec, as client-go's LeaderElectionRecord."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaderElectionRecord:
        spec = spec or {}
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.lease_transitions,
        }
        if self.holder_identity:
            spec["holderIdentity"] = self.holder_identity
        if self.acquire_time is not None:
            spec["acquireTime"] = _format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = _format_micro_time(self.renew_time)
        return spec


def _parse_time(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _format_micro_time(value: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits (the API server requires them)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``$HOSTNAME`` (the pod's name) + pid + a random suffix: unique even for two processes in one pod."""
    host = os.environ.get("HOSTNAME", "").strip() or socket.gethostname()
    return f"{host}_{os.getpid()}_{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------------------------------
# The pure decisions (unit-tested with an injected clock)


def lease_expired(record: LeaderElectionRecord, observed_at: float, now: float) -> bool:
    """Whether the record, unchanged since this process saw it at ``observed_at`` (monotonic), has expired.

    A record without a holder (never held, or released) is free whatever its times say."""
    if not record.holder_identity:
        return True
    return observed_at + record.lease_duration_seconds <= now


def may_acquire(record: LeaderElectionRecord, identity: str, observed_at: float, now: float) -> bool:
    """client-go's check before writing: ours to renew, free, or expired by the observed clock."""
    return record.holder_identity == identity or lease_expired(record, observed_at, now)


def next_record(
    current: LeaderElectionRecord | None, identity: str, lease_duration: int, wall_now: datetime
) -> LeaderElectionRecord:
    """What the holder writes: a renewal keeps acquireTime and the transitions; a new holder counts one
    more transition and starts its acquireTime now (client-go's tryAcquireOrRenew)."""
    if current is None:
        return LeaderElectionRecord(identity, lease_duration, wall_now, wall_now, 0)
    if current.holder_identity == identity:
        return replace(current, lease_duration_seconds=lease_duration, renew_time=wall_now)
    return LeaderElectionRecord(identity, lease_duration, wall_now, wall_now, current.lease_transitions + 1)


def released_record(current: LeaderElectionRecord, wall_now: datetime) -> LeaderElectionRecord:
    """The record a holder leaves on a graceful exit: no holder, a 1 s duration, the transitions kept."""
    return LeaderElectionRecord("", 1, wall_now, wall_now, current.lease_transitions)


# ---------------------------------------------------------------------------------------------------------
# Storage


class LeaseStore(Protocol):
    """The Lease as a dict (``metadata`` with ``resourceVersion``, ``spec``); raises :class:`LeaseConflict`."""

    def get(self, timeout: float) -> dict[str, Any] | None: ...

    def create(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    def replace(self, resource_version: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]: ...


class KubeLeaseStore:
    """The Lease through the kubernetes client, with an ApiClient of its own (the renewer's requests never
    queue behind the operator's)."""

    def __init__(self, namespace: str, name: str = LEASE_NAME, api_client: Any = None) -> None:
        from kubernetes import client as kube_client

        self.namespace = namespace
        self.name = name
        self._client = kube_client
        self._api = kube_client.CoordinationV1Api(api_client or _new_api_client())

    def _timeout(self, timeout: float) -> tuple[float, float]:
        seconds = max(0.2, timeout)
        return (seconds, seconds)

    def _as_dict(self, lease: Any) -> dict[str, Any]:
        data = self._api.api_client.sanitize_for_serialization(lease)
        assert isinstance(data, dict)
        return data

    def _body(self, spec: dict[str, Any], resource_version: str | None) -> Any:
        k = self._client
        spec_model = k.V1LeaseSpec(
            holder_identity=spec.get("holderIdentity"),
            lease_duration_seconds=spec.get("leaseDurationSeconds"),
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            lease_transitions=spec.get("leaseTransitions"),
        )
        metadata = k.V1ObjectMeta(
            name=self.name,
            namespace=self.namespace,
            resource_version=resource_version,
            labels={"app.kubernetes.io/name": "pve-operator", "app.kubernetes.io/component": "leader-election"},
        )
        return k.V1Lease(api_version="coordination.k8s.io/v1", kind="Lease", metadata=metadata, spec=spec_model)

    def _serialized(self, body: Any) -> Any:
        """The body with MicroTimes that always carry six fractional digits (isoformat drops them at .000000)."""
        for field in ("acquire_time", "renew_time"):
            value = getattr(body.spec, field)
            if value is not None and value.microsecond == 0:
                setattr(body.spec, field, value.replace(microsecond=1))
        return body

    def get(self, timeout: float) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout(timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._as_dict(lease)

    def create(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.create_namespaced_lease(
                self.namespace, self._serialized(self._body(spec, None)), _request_timeout=self._timeout(timeout)
            )
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflict(f"Lease {self.namespace}/{self.name} was created by someone else") from None
            raise
        return self._as_dict(lease)

    def replace(self, resource_version: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._serialized(self._body(spec, resource_version)),
                _request_timeout=self._timeout(timeout),
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise LeaseConflict(
                    f"Lease {self.namespace}/{self.name} changed under us (HTTP {exc.status})"
                ) from None
            raise
        return self._as_dict(lease)


def _new_api_client() -> Any:
    """In-cluster service account first, then $KUBECONFIG / ~/.kube/config (as the operator's own client)."""
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    configuration = kube_client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration, persist_config=False
        )
    return kube_client.ApiClient(configuration)


# ---------------------------------------------------------------------------------------------------------
# The elector


def _exit_process(message: str) -> NoReturn:
    log.critical("%s; exiting now so that no other action is taken", message)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # the process ends either way
            handler.flush()
    os._exit(LEASE_LOST_EXIT_CODE)


class LeaderElector:
    """One candidate. :meth:`acquire` blocks until it leads, :meth:`start_renewing` keeps the Lease,
    :meth:`release` gives it up. :meth:`try_acquire_or_renew` is one step of either (client-go's)."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timings: LeaseTimings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], object] = time.sleep,
        on_lost: Callable[[str], object] = _exit_process,
        lease_description: str = LEASE_NAME,
    ) -> None:
        self.store = store
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self.monotonic = monotonic
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.on_lost = on_lost
        self.lease_description = lease_description
        self.observed_record: LeaderElectionRecord | None = None
        self.observed_at = 0.0
        self.last_renewed: float | None = None
        self._resource_version = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_this_process(cls, namespace: str, timings: LeaseTimings | None = None) -> LeaderElector:
        store = KubeLeaseStore(namespace)
        return cls(
            store,
            default_identity(),
            timings or LeaseTimings.from_env(),
            lease_description=f"{namespace}/{LEASE_NAME}",
        )

    # -- one step ------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.observed_record is not None and self.observed_record.holder_identity == self.identity

    def _observe(self, record: LeaderElectionRecord, resource_version: str) -> None:
        if record != self.observed_record:
            self.observed_record = record
            self.observed_at = self.monotonic()
        self._resource_version = resource_version

    def try_acquire_or_renew(self, timeout: float | None = None) -> bool:
        """Read the Lease and, if it is ours, free or expired, write ourselves in. True when we hold it now.

        False when another holder's Lease has not expired, or another candidate won the write (409)."""
        timeout = self.timings.retry_period if timeout is None else timeout
        with self._lock:
            lease = self.store.get(timeout)
            wall_now = self.wall_clock()
            if lease is None:
                record = next_record(None, self.identity, self.timings.lease_duration, wall_now)
                try:
                    created = self.store.create(record.to_spec(), timeout)
                except LeaseConflict:
                    return False
                self._observe(LeaderElectionRecord.from_spec(created.get("spec")), _rv(created))
                self.last_renewed = self.monotonic()
                return True
            current = LeaderElectionRecord.from_spec(lease.get("spec"))
            self._observe(current, _rv(lease))
            if not may_acquire(current, self.identity, self.observed_at, self.monotonic()):
                return False
            record = next_record(current, self.identity, self.timings.lease_duration, wall_now)
            try:
                written = self.store.replace(self._resource_version, record.to_spec(), timeout)
            except LeaseConflict:
                return False
            self._observe(LeaderElectionRecord.from_spec(written.get("spec")), _rv(written))
            self.last_renewed = self.monotonic()
            return True

    # -- acquire -------------------------------------------------------------------------------

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process holds the Lease (True), or ``stop`` is set (False)."""
        started = self.monotonic()
        waiting_for: str | None = None
        while stop is None or not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    record = self.observed_record
                    assert record is not None
                    log.info(
                        "leader election: acquired Lease %s as %s after %.1f s (transitions: %d)",
                        self.lease_description,
                        self.identity,
                        self.monotonic() - started,
                        record.lease_transitions,
                    )
                    return True
            except LeaseConflict:
                pass
            except Exception as exc:  # the API server may be away for a while: keep trying
                log.warning("leader election: cannot read or write Lease %s: %s", self.lease_description, exc)
            holder = self.observed_record.holder_identity if self.observed_record else ""
            if holder and holder != waiting_for:
                log.info(
                    "leader election: waiting for %s, which holds Lease %s (standing by; takes over at most "
                    "%.0f s after it stops renewing)",
                    holder,
                    self.lease_description,
                    self.timings.takeover_bound,
                )
                waiting_for = holder
            if stop is not None:
                stop.wait(self.timings.retry_period)
            else:
                self.sleep(self.timings.retry_period)
        return False

    # -- renew ---------------------------------------------------------------------------------

    def renew_once(self) -> bool:
        """One renewal attempt of the renewer; calls ``on_lost`` when the Lease is gone for good. True when
        renewed."""
        last = self.last_renewed if self.last_renewed is not None else self.monotonic()
        budget = self.timings.renew_deadline - (self.monotonic() - last)
        if budget > 0:
            try:
                if self.try_acquire_or_renew(timeout=min(budget, self.timings.renew_deadline)):
                    return True
            except Exception as exc:  # retried until the renew deadline
                log.warning("leader election: renewing Lease %s failed: %s", self.lease_description, exc)
            holder = self.observed_record.holder_identity if self.observed_record else ""
            if holder and holder != self.identity:
                self._lost(f"leader election: lost Lease {self.lease_description}: {holder} holds it now")
                return False
        elapsed = self.monotonic() - last
        if elapsed >= self.timings.renew_deadline:
            self._lost(
                f"leader election: lost Lease {self.lease_description}: not renewed for {elapsed:.1f} s "
                f"(renew deadline {self.timings.renew_deadline:g} s)"
            )
        return False

    def _lost(self, message: str) -> None:
        self._stop.set()
        self.on_lost(message)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.timings.retry_period):
            self.renew_once()

    def start_renewing(self) -> threading.Thread:
        """The daemon thread that renews every retry period (after :meth:`acquire`)."""
        assert self.is_leader, "acquire first"
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()
        return self._renewer

    def stop_renewing(self) -> None:
        """Stop the renewer without releasing (as if the process had died, for tests; or before release)."""
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(timeout=self.timings.renew_deadline + 1)

    # -- release -------------------------------------------------------------------------------

    def release(self) -> bool:
        """Give the Lease up (graceful exit): the standby acquires it at its next retry. True if released."""
        self.stop_renewing()
        if not self.is_leader:
            return False
        with self._lock:
            try:
                lease = self.store.get(self.timings.renew_deadline)
                if lease is None:
                    return False
                current = LeaderElectionRecord.from_spec(lease.get("spec"))
                if current.holder_identity != self.identity:
                    log.warning(
                        "leader election: not releasing Lease %s: %s holds it",
                        self.lease_description,
                        current.holder_identity,
                    )
                    return False
                record = released_record(current, self.wall_clock())
                written = self.store.replace(_rv(lease), record.to_spec(), self.timings.renew_deadline)
            except Exception as exc:  # exiting anyway: the Lease then expires
                log.warning(
                    "leader election: could not release Lease %s (%s); it expires in %d s",
                    self.lease_description,
                    exc,
                    self.timings.lease_duration,
                )
                return False
            self.observed_record = LeaderElectionRecord.from_spec(written.get("spec"))
            self.observed_at = self.monotonic()
        log.info("leader election: released Lease %s (%s)", self.lease_description, self.identity)
        return True


def _rv(lease: Mapping[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")

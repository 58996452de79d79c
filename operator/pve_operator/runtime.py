"""Process-wide state of the running operator: connections to PVE, locks, caches.

Nothing here is authoritative: PVE and Kubernetes are (DESIGN.md principle 6). A restarted operator
rebuilds all of it: connections from the pool specs and Secrets, ownership records from the CTs'
own configs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from pve_operator.api.v1alpha1 import ConditionReason, ProxmoxServerPoolSpec
from pve_operator.api.v1alpha1.serverpool import PasswordCredentials, TokenCredentials, credentials_from_secret
from pve_operator.operator_namespace import operator_namespace
from pve_operator.planning.ownership import OWNERSHIP_KEY_BYTES, ForeignClaim, OwnershipKey, OwnershipRecord
from pve_operator.planning.pve_access import TagAccess
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings

log = logging.getLogger(__name__)


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


#: Seconds between two reconciliations of a ContainerPolicy by its timer (drift repair, fill growth).
RECONCILE_INTERVAL_SECONDS = env_float("PVE_OPERATOR_RECONCILE_INTERVAL", 15.0)
#: Seconds between two ticks of a ContainerPolicy's timer: a tick reconciles when the policy has Proxmox VE tasks in
#: flight (each followed once per tick, never waited for) or RECONCILE_INTERVAL_SECONDS passed since its last cycle.
#: 1 s keeps a creation burst within ~20 % of a reconcile that waited for its tasks (bench/policy_ticks.py); an
#: idle tick costs no API request.
POLICY_TICK_SECONDS = env_float("PVE_OPERATOR_POLICY_TICK", 1.0)
#: Seconds between two timer ticks of a ProxmoxServerPool (each tick samples if the spec's interval is due).
MONITOR_TICK_SECONDS = env_float("PVE_OPERATOR_MONITOR_TICK", 5.0)
#: Creations and starts in flight at once per pool (the lab did one at a time, blocking on each).
MAX_PARALLEL_TASKS = int(env_float("PVE_OPERATOR_MAX_PARALLEL_TASKS", 4))
#: CTs per policy whose config each reconcile reads to repair drift of the hot settings (swap, onboot,
#: startup, protection, cpulimit, cpuunits): every CT is checked once per N / this many cycles.
DRIFT_SWEEP_PER_CYCLE = int(env_float("PVE_OPERATOR_DRIFT_SWEEP_PER_CYCLE", 10))
#: Port of the Prometheus ``/metrics`` endpoint; 0 disables it.
METRICS_PORT = int(env_float("PVE_OPERATOR_METRICS_PORT", 9090))
#: Deadline for one PVE task (create, start, stop, destroy) in seconds.
TASK_TIMEOUT_SECONDS = env_float("PVE_OPERATOR_TASK_TIMEOUT", 600.0)
#: The Secret (in the operator's own namespace) holding the key that signs ownership records.
OWNERSHIP_KEY_SECRET = "pve-operator-ownership-key"
#: Its data key.
OWNERSHIP_KEY_FIELD = "hmac-sha256-key"
#: How long a replaced PVE client stays usable: a cycle that took it may wait for a task that long.
RETIRED_CLIENT_GRACE_SECONDS = TASK_TIMEOUT_SECONDS + 60.0


class ConfigurationError(Exception):
    """A cycle cannot go on for a reason the user must fix (a missing Secret, malformed credentials, no
    ownership key, the pool gone): ``reason`` and ``message`` go into the conditions as they are."""

    def __init__(self, reason: ConditionReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_kubernetes_config() -> None:
    """In-cluster service account first, then $KUBECONFIG / ~/.kube/config."""
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]


@dataclass
class PoolConnection:
    client: PveClient
    fingerprint: str
    limiter: threading.BoundedSemaphore
    #: Set by each pool sample; read by the policies before they create.
    tag_access: TagAccess | None = None
    #: Who the pool authenticates as in PVE: ``user@realm`` (password) or ``user@realm!token``.
    authid: str = ""
    #: Per policy UID: its Proxmox VE tasks in flight (status.tasksInFlight) as its last cycle left them; the
    #: policies of the pool share MAX_PARALLEL_TASKS task slots.
    policy_tasks: dict[str, int] = field(default_factory=dict)

    def task_slots(self, policy_uid: str) -> int:
        """Task slots a policy may fill: MAX_PARALLEL_TASKS less the other policies' tasks in flight."""
        others = sum(n for uid, n in self.policy_tasks.items() if uid != policy_uid)
        return max(0, MAX_PARALLEL_TASKS - others)


@dataclass
class OperatorRuntime:
    """Shared by all handlers (stored in Kopf's memo)."""

    connections: dict[tuple[str, str], PoolConnection] = field(default_factory=dict)
    #: Per policy UID: what each CT in its range proved (a record), claimed without proof, or None.
    records: dict[str, dict[int, OwnershipRecord | ForeignClaim | None]] = field(default_factory=dict)
    #: Per policy UID: the VMID the drift sweep continues after (:func:`execution.discovery.sweep_configs`).
    drift_cursor: dict[str, int] = field(default_factory=dict)
    #: Per policy UID: when (``time.monotonic()``) its last full reconcile ran; the policy timer ticks every
    #: POLICY_TICK_SECONDS but reconciles only with tasks in flight or once RECONCILE_INTERVAL_SECONDS passed.
    last_policy_cycle: dict[str, float] = field(default_factory=dict)
    #: Per policy UID: status fields its last cycle wrote that the next one reads (the task journal, recentActions).
    policy_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The key that signs ownership records, once read (or created): see :meth:`ownership_key`.
    _ownership_key: OwnershipKey | None = None
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    #: Clients replaced by a newer connection (Secret or CA rotated), with when: closed after a grace.
    _retired: list[tuple[float, PveClient]] = field(default_factory=list)
    #: Every value read from a Secret, in the spellings an error message could quote it in; what
    #: :meth:`redact` removes from any text before it is logged, posted or stored.
    _secret_spellings: set[str] = field(default_factory=set)

    def remember_secrets(self, values: Iterable[str]) -> None:
        spellings = set()
        for value in values:
            if len(value) < 4:
                continue  # too short to redact without mangling ordinary words
            spellings |= {
                value,
                repr(value)[1:-1],
                repr(value.encode("utf-8", "backslashreplace"))[2:-1],
                quote(value, safe=""),
            }
        with self._guard:
            self._secret_spellings |= spellings

    def redact(self, text: str) -> str:
        """``text`` with every known secret value (and its escaped spellings) replaced by ``***``."""
        with self._guard:
            spellings = sorted(self._secret_spellings, key=len, reverse=True)
        for spelling in spellings:
            text = text.replace(spelling, "***")
        return text

    def lock_for(self, key: str) -> threading.Lock:
        """One lock per object (by UID): a policy is never reconciled twice at once."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def records_for(self, policy_uid: str) -> dict[int, OwnershipRecord | ForeignClaim | None]:
        with self._guard:
            return self.records.setdefault(policy_uid, {})

    def ownership_key(self, *, create: bool = True, namespace: str | None = None) -> OwnershipKey:
        """The key that signs ownership records: Secret ``pve-operator-ownership-key`` in the operator's
        namespace, created with a random key the first time (only the operator reads it; a second
        replica creating it at the same moment gets 409 and reads the winner's). Read once per process.

        Raises :class:`ConfigurationError` (``OwnershipKeyUnavailable``) when it can be neither read nor
        created: without the key nothing can be proven ours, so nothing is changed. ``create=False``
        (read-only tools such as ``plan``) only reads; ``namespace`` overrides the operator's namespace."""
        with self._guard:
            if self._ownership_key is not None:
                return self._ownership_key
        namespace = namespace or operator_namespace()
        core = kube_client.CoreV1Api()
        where = f"Secret {namespace}/{OWNERSHIP_KEY_SECRET}"
        try:
            try:
                secret = core.read_namespaced_secret(OWNERSHIP_KEY_SECRET, namespace)
            except ApiException as exc:
                if exc.status != 404 or not create:
                    raise
                body = kube_client.V1Secret(
                    metadata=kube_client.V1ObjectMeta(
                        name=OWNERSHIP_KEY_SECRET,
                        labels={"app.kubernetes.io/name": "pve-operator", "app.kubernetes.io/component": "operator"},
                        annotations={
                            "pve.ctoperator.io/purpose": "signs the ownership records in the descriptions of the "
                            "operator's CTs; deleting it makes the operator re-sign only the CTs its policies "
                            "list in status, and treat every other claim as foreign"
                        },
                    ),
                    type="Opaque",
                    data={OWNERSHIP_KEY_FIELD: base64.b64encode(secrets.token_bytes(OWNERSHIP_KEY_BYTES)).decode()},
                )
                try:
                    secret = core.create_namespaced_secret(namespace, body)
                    log.info("created %s (the key that signs ownership records)", where)
                except ApiException as create_exc:
                    if create_exc.status != 409:
                        raise
                    secret = core.read_namespaced_secret(OWNERSHIP_KEY_SECRET, namespace)
            encoded = (secret.data or {}).get(OWNERSHIP_KEY_FIELD, "")
            key = OwnershipKey(base64.b64decode(encoded, validate=True))
        except ApiException as exc:
            raise ConfigurationError(
                ConditionReason.OWNERSHIP_KEY_UNAVAILABLE,
                f"the operator can neither read nor create {where} (HTTP {exc.status} {exc.reason}): "
                "without it no CT can be proven the operator's, so none is changed",
            ) from None
        except ValueError:
            raise ConfigurationError(
                ConditionReason.OWNERSHIP_KEY_UNAVAILABLE,
                f"{where} has no valid {OWNERSHIP_KEY_FIELD} (base64 of at least {OWNERSHIP_KEY_BYTES} bytes)",
            ) from None
        with self._guard:
            if self._ownership_key is None:
                self._ownership_key = key
            return self._ownership_key

    def use_ownership_key(self, key: OwnershipKey) -> None:
        """Use ``key`` instead of the Secret's (tests that run handlers' functions without a cluster)."""
        with self._guard:
            self._ownership_key = key

    # -- Kubernetes reads -------------------------------------------------------------------

    def _read_object_data(self, kind: str, namespace: str, name: str) -> tuple[dict[str, str], str]:
        core = kube_client.CoreV1Api()
        try:
            if kind == "Secret":
                secret = core.read_namespaced_secret(name, namespace)
                data = {}
                for key, encoded in (secret.data or {}).items():
                    try:
                        data[key] = base64.b64decode(encoded).decode("utf-8")
                    except (ValueError, UnicodeDecodeError):
                        raise ConfigurationError(
                            ConditionReason.INVALID_CREDENTIALS, f"Secret {name}: the value of {key} is not UTF-8 text"
                        ) from None
                self.remember_secrets(data.values())
                return data, str(secret.metadata.resource_version if secret.metadata else "")
            config_map = core.read_namespaced_config_map(name, namespace)
            return dict(config_map.data or {}), str(config_map.metadata.resource_version if config_map.metadata else "")
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigurationError(
                    ConditionReason(f"{kind}NotFound"), f"{kind} {namespace}/{name} does not exist"
                ) from None
            if exc.status == 403:
                raise ConfigurationError(
                    ConditionReason(f"{kind}Forbidden"), f"the operator may not read {kind} {namespace}/{name}"
                ) from None
            raise

    # -- PVE connections --------------------------------------------------------------------

    def connection(self, namespace: str, pool_name: str, spec: ProxmoxServerPoolSpec) -> PoolConnection:
        """The pool's PVE client, rebuilt when the spec's connection fields or the Secret change."""
        secret, secret_version = self._read_object_data("Secret", namespace, spec.credentials_secret_ref.name)
        try:
            creds = credentials_from_secret(secret)
        except ValueError as exc:
            raise ConfigurationError(
                ConditionReason.INVALID_CREDENTIALS, f"Secret {spec.credentials_secret_ref.name}: {exc}"
            ) from None
        ca_pem: str | None = None
        ca_version = ""
        ca_source = spec.tls.ca_reference
        if ca_source is not None:
            kind, ref = ca_source
            data, ca_version = self._read_object_data(kind, namespace, ref.name)
            if ref.key not in data:
                raise ConfigurationError(ConditionReason.CA_NOT_FOUND, f"{kind} {ref.name} has no key {ref.key}")
            ca_pem = data[ref.key]
        fingerprint = hashlib.sha256(
            f"{spec.endpoint}|{spec.tls.insecure_skip_verify}|{spec.tls.fingerprint_sha256}|{secret_version}|"
            f"{ca_version}".encode()
        ).hexdigest()
        if isinstance(creds, TokenCredentials):
            pve_creds = PveCredentials(token_id=creds.token_id, token_secret=creds.token_secret)
        else:
            assert isinstance(creds, PasswordCredentials)
            pve_creds = PveCredentials(username=creds.username, password=creds.password)
        tls = TlsSettings(
            ca_pem=ca_pem,
            insecure_skip_verify=spec.tls.insecure_skip_verify,
            fingerprint_sha256=spec.tls.fingerprint_sha256,
        )
        authid = creds.token_id if isinstance(creds, TokenCredentials) else creds.username
        connection = self.install_connection(
            (namespace, pool_name), fingerprint, lambda: PveClient(spec.endpoint, pve_creds, tls)
        )
        connection.authid = authid
        return connection

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret (remembered for redaction). :class:`ConfigurationError` when the Secret or
        the key is missing or unreadable."""
        data, _ = self._read_object_data("Secret", namespace, name)
        if key not in data:
            raise ConfigurationError(ConditionReason.SECRET_NOT_FOUND, f"Secret {namespace}/{name} has no key {key}")
        return data[key]

    def config_map_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a ConfigMap. :class:`ConfigurationError` when the ConfigMap or the key is missing."""
        data, _ = self._read_object_data("ConfigMap", namespace, name)
        if key not in data:
            raise ConfigurationError(
                ConditionReason.CONFIG_MAP_NOT_FOUND, f"ConfigMap {namespace}/{name} has no key {key}"
            )
        return data[key]

    def install_connection(
        self, key: tuple[str, str], fingerprint: str, make_client: Callable[[], PveClient], *, now: float | None = None
    ) -> PoolConnection:
        """The pool's connection for ``fingerprint``: the current one, or a new one that replaces it.

        A replaced client is retired, not closed: threads of a cycle still running may be using it
        (closing removes its CA file, and their next request would fail with a TLS error). Retired
        clients are closed once no cycle can still hold them (a task deadline and a minute later).
        """
        now = time.monotonic() if now is None else now
        with self._guard:
            self._close_retired(now)
            current = self.connections.get(key)
            if current is not None and current.fingerprint == fingerprint:
                return current
            limiter = current.limiter if current else threading.BoundedSemaphore(MAX_PARALLEL_TASKS)
            if current is not None:
                self._retired.append((now, current.client))
            connection = PoolConnection(client=make_client(), fingerprint=fingerprint, limiter=limiter)
            self.connections[key] = connection
            return connection

    def _close_retired(self, now: float) -> None:
        keep = []
        for retired_at, client in self._retired:
            if now - retired_at >= RETIRED_CLIENT_GRACE_SECONDS:
                client.close()
            else:
                keep.append((retired_at, client))
        self._retired = keep

    def close(self) -> None:
        """Close every PVE connection, retired ones too (removes their CA files): at shutdown."""
        with self._guard:
            connections, self.connections = list(self.connections.values()), {}
            retired, self._retired = [client for _, client in self._retired], []
        for client in [c.client for c in connections] + retired:
            client.close()

    def forget_pool(self, namespace: str, pool_name: str) -> None:
        with self._guard:
            current = self.connections.pop((namespace, pool_name), None)
            if current is not None:
                self._retired.append((time.monotonic(), current.client))


def kopf_body_uid(body: Any) -> str:
    return str(body.get("metadata", {}).get("uid", ""))

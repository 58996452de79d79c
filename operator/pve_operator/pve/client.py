"""PveClient: typed calls to one Proxmox VE cluster through proxmoxer.

Rules this class keeps:

* One request per monitoring cycle for the cluster view (:meth:`PveClient.snapshot` reads
  ``/cluster/resources`` once, whatever the number of CTs); per-CT reads only where an action needs
  authoritative state (config before a destructive action, status before a power action).
* Reads are retried on transport errors; mutating requests (POST/PUT/DELETE) never are: after a
  transport error their outcome is unknown, so the caller re-reads the state and decides again.
* Booleans go out as ``1``/``0`` (PVE rejects proxmoxer's ``True``); ``unprivileged`` is always
  sent explicitly on create because PVE 8 and 9 default differently.
* Credentials live only inside proxmoxer's auth object; every message this module produces passes
  through :func:`redact`, and proxmoxer's request logger (which would print POST bodies) is muted.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import proxmoxer
import requests
from proxmoxer.core import AuthenticationError, ResourceException
from requests.adapters import HTTPAdapter

from pve_operator.metrics import PVE_REQUEST_SECONDS, endpoint_template
from pve_operator.planning.balancing.rrd_history import newest
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, ContainerStatus, NodeUsage
from pve_operator.planning.ownership import normalize_tags
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveError,
    PveNotProxmox,
    PveTimeout,
    PveUnreachable,
    classify,
)
from pve_operator.pve.tasks import Backoff, TaskResult, Upid, check_task, wait_for_task

log = logging.getLogger(__name__)
# proxmoxer logs request bodies at INFO; bodies can carry secrets (e.g. a CT password).
logging.getLogger("proxmoxer").setLevel(logging.WARNING)

_T = TypeVar("_T")
_insecure_warned: set[str] = set()
_insecure_lock = threading.Lock()
DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class PveCredentials:
    """An API token (``user@realm!tokenid`` + secret) or a user and password. Secrets never print."""

    token_id: str | None = None
    token_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token_id:
            user, sep, name = self.token_id.partition("!")
            if not (sep and user and "@" in user and name):
                raise ValueError("tokenId must look like user@realm!tokenid")
            if not self.token_secret:
                raise ValueError("tokenSecret is required with tokenId")
        elif not (self.username and self.password):
            raise ValueError("either tokenId and tokenSecret, or username and password, are required")

    @property
    def user(self) -> str:
        """The PVE user the operator acts as (``user@realm`` or ``user@realm!tokenid``)."""
        return self.token_id or self.username or ""

    def secrets(self) -> list[str]:
        return [s for s in (self.token_secret, self.password) if s]


@dataclass(frozen=True)
class TlsSettings:
    """How to verify PVE's certificate: a CA bundle (PEM text), the system store, a pinned SHA-256
    fingerprint of the server's certificate (as PVE shows it: ``AB:CD:...``), or not at all."""

    ca_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False
    fingerprint_sha256: str | None = None

    @property
    def pinned_fingerprint(self) -> str | None:
        """The pin as lower-case hex without separators, or None."""
        if not self.fingerprint_sha256:
            return None
        return self.fingerprint_sha256.replace(":", "").strip().lower()


class _PinnedAdapter(HTTPAdapter):
    """Accept the server's certificate exactly when its SHA-256 fingerprint is the pinned one (the
    way PVE's own clients trust a node), whoever signed it; urllib3 checks it on every connection."""

    def __init__(self, fingerprint_hex: str) -> None:
        self._fingerprint_hex = fingerprint_hex
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint_hex
        super().init_poolmanager(*args, **kwargs)


def server_certificate_sha256(host: str, port: int, timeout_seconds: float) -> str:
    """SHA-256 of the DER certificate the server presents, lower-case hex (no verification)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout_seconds) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der or b"").hexdigest()


@dataclass(frozen=True)
class _Answer:
    """What the last HTTP answer looked like, to tell a PVE error from another server's page."""

    status: int
    content_type: str
    server: str
    body_start: str

    @property
    def looks_like_html(self) -> bool:
        return "html" in self.content_type.lower() or self.body_start.lstrip().startswith("<")


#: The last answer seen by this thread (or task): set by a response hook on the proxmoxer session.
_last_answer: contextvars.ContextVar[_Answer | None] = contextvars.ContextVar("pve_last_answer", default=None)


def _remember_answer(response: requests.Response, *_: Any, **__: Any) -> None:
    _last_answer.set(
        _Answer(
            status=response.status_code,
            content_type=response.headers.get("Content-Type", ""),
            server=response.headers.get("Server", ""),
            body_start=response.content[:64].decode("utf-8", "replace"),
        )
    )


def _not_proxmox(answer: _Answer) -> str:
    server = f" from {answer.server!r}" if answer.server else ""
    return (
        f"the server answered HTTP {answer.status}{server} with {answer.content_type or 'no content type'}, "
        "not with Proxmox VE's JSON: check spec.endpoint (and any proxy in front of Proxmox VE)"
    )


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _as_pve_value(value: Any) -> Any:
    """PVE accepts booleans only as 1/0 at the top level of a request."""
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _as_pve_value(v) for k, v in params.items() if v is not None}


class PveClient:
    """A connection to one PVE cluster. Thread-safe for concurrent calls (one requests session each)."""

    def __init__(
        self,
        endpoint: str,
        credentials: PveCredentials,
        tls: TlsSettings = TlsSettings(),
        *,
        timeout_seconds: float = 20.0,
        connect_timeout_seconds: float = 5.0,
        read_retries: int = 2,
    ) -> None:
        parsed = urlsplit(endpoint)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"endpoint must be an https:// URL, got {endpoint!r}")
        self.endpoint = endpoint
        self._host = parsed.hostname
        self._port = parsed.port or 8006
        # proxmoxer appends /api2/json itself: an endpoint copied with it must not have it twice.
        self._path_prefix = parsed.path.rstrip("/").removesuffix("/api2/json").strip("/") or None
        self._credentials = credentials
        # (connect, read): a refused or black-holed connection fails in seconds; a read may wait for
        # PVE's own 10 s config lock, so it gets more, once (a hung API is not asked twice).
        self._timeout = (connect_timeout_seconds, timeout_seconds)
        self._read_retries = read_retries
        self._ca_file: str | None = None
        self._verify: bool | str
        self._pin = tls.pinned_fingerprint
        if self._pin is not None:
            self._verify = False  # trust comes from the pin, checked on every connection
        elif tls.insecure_skip_verify:
            self._verify = False
            with _insecure_lock:
                if endpoint not in _insecure_warned:
                    _insecure_warned.add(endpoint)
                    log.warning("TLS verification is disabled for %s (tls.insecureSkipVerify)", endpoint)
        elif tls.ca_pem:
            fd, self._ca_file = tempfile.mkstemp(prefix="pve-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as handle:
                handle.write(tls.ca_pem)
            self._verify = self._ca_file
        else:
            self._verify = True
        self._api_lock = threading.Lock()
        self._api: Any = None

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._ca_file:
            with suppress(FileNotFoundError):
                os.unlink(self._ca_file)
            self._ca_file = None

    def __enter__(self) -> PveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> Any:
        """The proxmoxer API object; password logins fetch a ticket here (proxmoxer renews it)."""
        with self._api_lock:
            if self._api is None:
                creds = self._credentials
                kwargs: dict[str, Any] = {
                    "port": self._port,
                    "verify_ssl": self._verify,
                    "timeout": self._timeout,
                    "path_prefix": self._path_prefix,
                }
                if creds.token_id:
                    user, _, token_name = creds.token_id.partition("!")
                    kwargs.update(user=user, token_name=token_name, token_value=creds.token_secret)
                else:
                    kwargs.update(user=creds.username, password=creds.password)
                if self._pin is not None:
                    self._check_pin()  # before any credential leaves (a password login posts at once)
                with self._translate_errors("POST /access/ticket", mutating=False):
                    self._api = proxmoxer.ProxmoxAPI(self._host, backend="https", **kwargs)
                session = self._api._store.get("session")
                if session is not None:
                    session.hooks["response"].append(_remember_answer)
                    if self._pin is not None:
                        session.mount("https://", _PinnedAdapter(self._pin))
            return self._api

    def _check_pin(self) -> None:
        try:
            seen = server_certificate_sha256(self._host, self._port, self._timeout[0])
        except OSError as exc:
            raise PveUnreachable(f"{type(exc).__name__}: {exc}", request="TLS handshake") from None
        if not hmac.compare_digest(seen, self._pin or ""):
            shown = ":".join(seen[i : i + 2] for i in range(0, len(seen), 2)).upper()
            raise PveUnreachable(
                f"the server's certificate has SHA-256 fingerprint {shown}, not the pinned "
                "tls.fingerprintSHA256: nothing was sent to it",
                request="TLS handshake",
            )

    @contextmanager
    def _translate_errors(self, request: str, *, mutating: bool) -> Iterator[None]:
        method, _, path = request.partition(" ")
        started = time.monotonic()
        outcome = "ok"
        try:
            with self._typed_errors(request, mutating=mutating):
                yield
        except PveError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            PVE_REQUEST_SECONDS.labels(method, endpoint_template(path), outcome).observe(time.monotonic() - started)

    @contextmanager
    def _typed_errors(self, request: str, *, mutating: bool) -> Iterator[None]:
        secrets = self._credentials.secrets()
        _last_answer.set(None)
        try:
            yield
            answer = _last_answer.get()
            if answer is not None and answer.looks_like_html:  # a 2xx page proxmoxer took as data
                raise PveNotProxmox(_not_proxmox(answer), status=answer.status, request=request)
        except ResourceException as exc:
            answer = _last_answer.get()
            if answer is not None and answer.looks_like_html:
                raise PveNotProxmox(_not_proxmox(answer), status=exc.status_code, request=request) from None
            errors = exc.errors if isinstance(exc.errors, dict) and "errors" not in exc.errors else None
            message = redact(str(exc.content or ""), secrets)
            raise classify(exc.status_code, message, request=request, errors=errors) from None
        except ValueError as exc:  # a 2xx body proxmoxer could not decode as JSON
            if not isinstance(exc, json.JSONDecodeError):
                raise
            answer = _last_answer.get()
            raise PveNotProxmox(_not_proxmox(answer) if answer else "the answer is not JSON", request=request) from None
        except AuthenticationError:
            # proxmoxer's message names the user and URL only; we say the same in our words.
            raise PveAuthenticationError(
                f"authentication failed for {self._credentials.user}", status=401, request=request
            ) from None
        except requests.exceptions.SSLError as exc:
            raise PveUnreachable(redact(f"TLS verification failed: {exc}", secrets), request=request) from None
        except requests.exceptions.ReadTimeout:
            outcome = " (outcome unknown: state will be re-read, the request is not repeated)" if mutating else ""
            message = f"Proxmox VE accepted the connection but did not answer within {self._timeout[1]:g} s"
            raise PveTimeout(message + outcome, request=request) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            outcome = " (outcome unknown: state will be re-read, the request is not repeated)" if mutating else ""
            raise PveUnreachable(redact(f"{type(exc).__name__}: {exc}", secrets) + outcome, request=request) from None

    def _read(self, request: str, call: Callable[[Any], _T]) -> _T:
        """A GET, retried on transport errors (reads are safe to repeat)."""
        attempt = 0
        while True:
            try:
                api = self._connect()
                with self._translate_errors(request, mutating=False):
                    return call(api)
            except PveTimeout:
                raise
            except PveUnreachable:
                attempt += 1
                if attempt > self._read_retries:
                    raise
                time.sleep(0.2 * 2**attempt)

    def _write(self, request: str, call: Callable[[Any], _T]) -> _T:
        """A POST/PUT/DELETE: exactly one attempt."""
        api = self._connect()
        with self._translate_errors(request, mutating=True):
            return call(api)

    # -- reads ------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return dict(self._read("GET /version", lambda api: api.version.get()))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._read("GET /nodes", lambda api: api.nodes.get()))

    def cluster_resources(self) -> list[dict[str, Any]]:
        return list(self._read("GET /cluster/resources", lambda api: api.cluster.resources.get()))

    def permissions(self, path: str | None = None) -> dict[str, dict[str, int]]:
        """Effective privileges of the operator's user or token (on ``path``, when given)."""
        params = {"path": path} if path else {}
        return dict(self._read("GET /access/permissions", lambda api: api.access.permissions.get(**params)))

    def ha_rules(self) -> list[dict[str, Any]]:
        """PVE 9's HA rules (``GET /cluster/ha/rules``: node-affinity and resource-affinity, HA groups
        shown as ``ha-group-*`` rules); needs ``Sys.Audit`` on ``/``."""
        return list(self._read("GET /cluster/ha/rules", lambda api: api.cluster.ha.rules.get()))

    def ha_resources(self) -> list[dict[str, Any]]:
        """``GET /cluster/ha/resources`` (needs ``Sys.Audit`` on ``/``)."""
        return list(self._read("GET /cluster/ha/resources", lambda api: api.cluster.ha.resources.get()))

    def create_ha_resource(self, sid: str, params: Mapping[str, Any]) -> None:
        body = _clean({"sid": sid, **params})
        self._write("POST /cluster/ha/resources", lambda api: api.cluster.ha.resources.post(**body))

    def update_ha_resource(self, sid: str, params: Mapping[str, Any]) -> None:
        body = _clean(params)
        self._write(f"PUT /cluster/ha/resources/{sid}", lambda api: api.cluster.ha.resources(sid).put(**body))

    def delete_ha_resource(self, sid: str) -> None:
        """Remove the HA resource and, with PVE's default ``purge``, the CT from every HA rule."""
        self._write(f"DELETE /cluster/ha/resources/{sid}", lambda api: api.cluster.ha.resources(sid).delete())

    def create_ha_rule(self, rule: str, rule_type: str, params: Mapping[str, Any]) -> None:
        body = _clean({"rule": rule, "type": rule_type, **params})
        self._write("POST /cluster/ha/rules", lambda api: api.cluster.ha.rules.post(**body))

    def update_ha_rule(self, rule: str, rule_type: str, params: Mapping[str, Any]) -> None:
        body = _clean({"type": rule_type, **params})
        self._write(f"PUT /cluster/ha/rules/{rule}", lambda api: api.cluster.ha.rules(rule).put(**body))

    def delete_ha_rule(self, rule: str) -> None:
        self._write(f"DELETE /cluster/ha/rules/{rule}", lambda api: api.cluster.ha.rules(rule).delete())

    def cluster_options(self) -> dict[str, Any]:
        """``datacenter.cfg`` as ``GET /cluster/options`` reports it (needs ``Sys.Audit`` on ``/``)."""
        return dict(self._read("GET /cluster/options", lambda api: api.cluster.options.get()))

    def node_rrd(self, node: str) -> list[dict[str, Any]]:
        """The node's RRD for the last hour, one-minute averages, oldest first (``GET
        /nodes/{node}/rrddata timeframe=hour``; each row ``{"time": epoch, "cpu": ..., "memused": ...}``,
        columns without data left out). Needs ``Sys.Audit`` on the node."""
        rows = self._read(
            f"GET /nodes/{node}/rrddata",
            lambda api: api.nodes(node).rrddata.get(timeframe="hour", cf="AVERAGE"),
        )
        return [dict(row) for row in rows if isinstance(row, Mapping)]

    def node_pressure(self, node: str, key: str) -> tuple[float, float] | None:
        """``(time, percent)`` of the newest row with a pressure column of the node's RRD (PVE 9
        ``pve-node-9.0``: ``pressurememorysome``, ``pressurecpusome``, ...; percent of time stalled, the
        average of the minute that ends at ``time``), or None when the RRD has no such column (PVE 8) or
        no data yet."""
        return newest(self.node_rrd(node), key)

    def templates(self, node: str, storage: str) -> frozenset[str]:
        """Volume IDs of the CT templates (``vztmpl``) on ``storage`` as ``node`` sees it."""
        content = self._read(
            f"GET /nodes/{node}/storage/{storage}/content",
            lambda api: api.nodes(node).storage(storage).content.get(content="vztmpl"),
        )
        return frozenset(str(item.get("volid", "")) for item in content)

    def container_config(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(
            self._read(
                f"GET /nodes/{node}/lxc/{vmid}/config",
                lambda api: api.nodes(node).lxc(vmid).config.get(),
            )
        )

    def container_status(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(
            self._read(
                f"GET /nodes/{node}/lxc/{vmid}/status/current",
                lambda api: api.nodes(node).lxc(vmid).status.current.get(),
            )
        )

    def locate_container(self, vmid: int) -> str | None:
        """The node a CT is on now (one cluster list), or None when it is gone. For actions whose CT may
        have moved since the snapshot; monitoring uses :meth:`snapshot` instead."""
        for entry in self.cluster_resources():
            if entry.get("type") == "lxc" and int(entry.get("vmid", -1)) == vmid:
                return str(entry.get("node"))
        return None

    def snapshot(self, taken_at: float) -> ClusterSnapshot:
        """The whole cluster in one request: nodes, CTs, VM ids, CT storages."""
        return snapshot_from_resources(self.cluster_resources(), taken_at)

    # -- writes (each returns a UPID, except the synchronous config update) -------------------

    def create_container(self, node: str, vmid: int, params: Mapping[str, Any]) -> str:
        body = _clean({"vmid": vmid, **params})
        return str(self._write(f"POST /nodes/{node}/lxc", lambda api: api.nodes(node).lxc.post(**body)))

    def clone_container(self, node: str, vmid: int, params: Mapping[str, Any]) -> str:
        """``POST /nodes/{node}/lxc/{vmid}/clone``: a ``vzclone`` task making CT ``newid`` from ``vmid``."""
        body = _clean(params)
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/clone", lambda api: api.nodes(node).lxc(vmid).clone.post(**body)
            )
        )

    def move_volume(self, node: str, vmid: int, volume: str, *, target_vmid: int, target_volume: str) -> str:
        """``POST /nodes/{node}/lxc/{vmid}/move_volume`` with ``target-vmid``: a ``move_volume`` task reassigning
        CT ``vmid``'s ``volume`` (``mp0``, ...) to CT ``target_vmid`` as ``target_volume``. PVE renames the volume
        for its new owner and keeps its mount options; both CTs on one node, the source stopped."""
        body = {"volume": volume, "target-vmid": target_vmid, "target-volume": target_volume}
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/move_volume",
                lambda api: api.nodes(node).lxc(vmid).move_volume.post(**body),
            )
        )

    def start_container(self, node: str, vmid: int) -> str:
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/status/start",
                lambda api: api.nodes(node).lxc(vmid).status.start.post(),
            )
        )

    def stop_container(self, node: str, vmid: int) -> str:
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/status/stop",
                lambda api: api.nodes(node).lxc(vmid).status.stop.post(),
            )
        )

    def reboot_container(self, node: str, vmid: int) -> str:
        """``POST .../status/reboot``: a clean shutdown and start, which applies pending changes."""
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/status/reboot",
                lambda api: api.nodes(node).lxc(vmid).status.reboot.post(),
            )
        )

    def shutdown_container(self, node: str, vmid: int, *, timeout_seconds: int, force_stop: bool = True) -> str:
        body = _clean({"timeout": timeout_seconds, "forceStop": force_stop})
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/status/shutdown",
                lambda api: api.nodes(node).lxc(vmid).status.shutdown.post(**body),
            )
        )

    def destroy_container(self, node: str, vmid: int, *, purge: bool = True, force: bool = False) -> str:
        params = _clean({"purge": purge, "force": force})
        return str(
            self._write(
                f"DELETE /nodes/{node}/lxc/{vmid}",
                lambda api: api.nodes(node).lxc(vmid).delete(**params),
            )
        )

    def migrate_container(self, node: str, vmid: int, *, target: str, restart: bool, timeout_seconds: int = 180) -> str:
        body = _clean({"target": target, "restart": restart, "timeout": timeout_seconds if restart else None})
        return str(
            self._write(
                f"POST /nodes/{node}/lxc/{vmid}/migrate",
                lambda api: api.nodes(node).lxc(vmid).migrate.post(**body),
            )
        )

    def update_container_config(self, node: str, vmid: int, params: Mapping[str, Any]) -> None:
        body = _clean(params)
        self._write(
            f"PUT /nodes/{node}/lxc/{vmid}/config",
            lambda api: api.nodes(node).lxc(vmid).config.put(**body),
        )

    # -- tasks ------------------------------------------------------------------------------

    def active_task_types(self, node: str, vmid: int) -> frozenset[str]:
        """Types of the tasks running now on ``node`` for ``vmid`` (``vzcreate``, ``vzstart``, ...)."""
        tasks = self._read(
            f"GET /nodes/{node}/tasks",
            lambda api: api.nodes(node).tasks.get(vmid=vmid, source="active"),
        )
        # PVE lists a running task with status RUNNING (an ended one not yet archived with its exit status).
        return frozenset(
            str(t.get("type", "")) for t in tasks if str(t.get("status") or "RUNNING").upper() == "RUNNING"
        )

    def task_status(self, upid: Upid) -> dict[str, Any]:
        return dict(
            self._read(
                f"GET /nodes/{upid.node}/tasks/{upid.type}/status",
                lambda api: api.nodes(upid.node).tasks(upid.raw).status.get(),
            )
        )

    def task_log_tail(self, upid: Upid, lines: int = 20) -> list[str]:
        try:
            entries = self._read(
                f"GET /nodes/{upid.node}/tasks/{upid.type}/log",
                lambda api: api.nodes(upid.node).tasks(upid.raw).log.get(start=0, limit=5000),
            )
        except PveError:
            return []  # the log only decorates a failure we already know about
        return [str(e.get("t", "")) for e in entries][-lines:]

    def task_result(self, upid: str) -> TaskResult | None:
        """One look at the task: None while it runs, its result when it ended OK; raises
        :class:`PveTaskFailed` when it failed (a task PVE no longer knows: :class:`PveNotFound`)."""
        return check_task(upid, read_status=self.task_status, read_log_tail=self.task_log_tail)

    def wait(self, upid: str, *, timeout_seconds: float, backoff: Backoff = DEFAULT_BACKOFF) -> TaskResult:
        return wait_for_task(
            upid,
            read_status=self.task_status,
            read_log_tail=self.task_log_tail,
            timeout_seconds=timeout_seconds,
            backoff=backoff,
        )


def _number(entry: Mapping[str, Any], key: str) -> float:
    try:
        return float(entry.get(key) or 0)
    except (TypeError, ValueError):
        return 0.0


def snapshot_from_resources(resources: list[dict[str, Any]], taken_at: float) -> ClusterSnapshot:
    """Build the planner's snapshot from one ``/cluster/resources`` answer.

    A node's disk figures are those of its local (non-shared) storages that hold CT root disks,
    which is what CTs consume; without such a storage the node's root filesystem is used.
    """
    ct_storage: dict[str, tuple[float, float]] = {}
    for entry in resources:
        if entry.get("type") == "storage" and not int(entry.get("shared") or 0):
            content = str(entry.get("content") or "")
            if "rootdir" in content.split(","):
                used, total = ct_storage.get(str(entry.get("node")), (0.0, 0.0))
                ct_storage[str(entry.get("node"))] = (
                    used + _number(entry, "disk"),
                    total + _number(entry, "maxdisk"),
                )
    nodes: list[NodeUsage] = []
    containers: list[ContainerObservation] = []
    vm_ids: list[int] = []
    for entry in resources:
        kind = entry.get("type")
        if kind == "node":
            name = str(entry.get("node"))
            disk_used, disk_total = ct_storage.get(name, (_number(entry, "disk"), _number(entry, "maxdisk")))
            nodes.append(
                NodeUsage(
                    name=name,
                    online=entry.get("status") == "online",
                    cpu_cores=_number(entry, "maxcpu"),
                    cpu_used_fraction=_number(entry, "cpu"),
                    memory_total_bytes=int(_number(entry, "maxmem")),
                    memory_used_bytes=int(_number(entry, "mem")),
                    disk_total_bytes=int(disk_total),
                    disk_used_bytes=int(disk_used),
                )
            )
        elif kind == "lxc":
            status = str(entry.get("status") or "unknown")
            containers.append(
                ContainerObservation(
                    vmid=int(entry["vmid"]),
                    node=str(entry.get("node")),
                    status=ContainerStatus(status) if status in ("running", "stopped") else ContainerStatus.UNKNOWN,
                    name=str(entry.get("name") or ""),
                    tags=normalize_tags(str(entry.get("tags") or "")),
                    lock=str(entry["lock"]) if entry.get("lock") else None,
                    pool=str(entry["pool"]) if entry.get("pool") else None,
                    cpu_cores=_number(entry, "maxcpu"),
                    cpu_used_fraction=_number(entry, "cpu"),
                    memory_limit_bytes=int(_number(entry, "maxmem")),
                    memory_used_bytes=int(_number(entry, "mem")),
                    disk_limit_bytes=int(_number(entry, "maxdisk")),
                    disk_used_bytes=int(_number(entry, "disk")),
                    uptime_seconds=int(_number(entry, "uptime")),
                    ha_state=str(entry["hastate"]) if entry.get("hastate") else None,
                    template=bool(int(entry.get("template") or 0)),
                )
            )
        elif kind == "qemu":
            vm_ids.append(int(entry["vmid"]))
    shared = {str(e.get("storage")) for e in resources if e.get("type") == "storage" and int(e.get("shared") or 0)}
    return ClusterSnapshot.of(taken_at, nodes, containers, vm_ids, shared)

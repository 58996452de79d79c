"""A real, local Kubernetes control plane (etcd + kube-apiserver) without Docker.

The binaries are built from the upstream Go modules by ``hack/build-controlplane.sh`` (``make controlplane``)
and cached outside the clone, keyed by the versions in ``hack/controlplane/versions.env``.
:class:`LocalControlPlane` starts them on free loopback ports with a throw-away PKI generated here, writes an
admin kubeconfig and waits until ``/readyz`` is ok. Like controller-runtime's envtest, no controllers run:
no garbage collection, no namespace finalization (deleted namespaces stay ``Terminating``), no pods scheduled.

Library use::

    with LocalControlPlane() as cp:
        subprocess.run([cp.kubectl_path, "get", "namespaces"], env=cp.env(), check=True)

Command line (used by ``make demo``)::

    python hack/local_control_plane.py up [--state-dir DIR]

prints ``export KUBECONFIG=...`` and serves until SIGINT/SIGTERM, then stops both processes.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HACK_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = HACK_DIR / "controlplane" / "versions.env"
BUILD_SCRIPT = HACK_DIR / "build-controlplane.sh"

#: Names used inside the generated kubeconfig.
KUBECONFIG_CLUSTER = "pve-operator-local"
KUBECONFIG_ADMIN_USER = "admin"

#: The admin client certificate's identity; the system:masters group bypasses RBAC.
ADMIN_COMMON_NAME = "admin"
ADMIN_GROUP = "system:masters"

#: kube-apiserver's service range; 10.0.0.1 is the ClusterIP of the `kubernetes` Service, hence in the SANs.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

# Loopback only: nothing here should ever be reachable from another machine.
LOOPBACK = "127.0.0.1"

_LOG_TAIL_LINES = 40
_PORT_RETRY_ATTEMPTS = 3
_POLL_INTERVAL_S = 0.2


class ControlPlaneError(RuntimeError):
    """The local control plane could not be started or used."""


class ControlPlaneBinariesMissing(ControlPlaneError, FileNotFoundError):
    """The etcd / kube-apiserver / kubectl binaries have not been built yet."""


class _PortInUse(ControlPlaneError):
    """A process lost the race for a port picked by :func:`free_loopback_port`; start() retries."""


@dataclass(frozen=True)
class ControlPlaneVersions:
    """Pinned versions, read from ``hack/controlplane/versions.env`` (the single place they are set)."""

    kubernetes: str
    etcd: str


def read_versions(path: Path = VERSIONS_FILE) -> ControlPlaneVersions:
    """Parse the KEY=VALUE versions file shared with ``hack/build-controlplane.sh``."""
    values: dict[str, str] = {}
    for raw_line in path.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ControlPlaneError(f"{path}: not a KEY=VALUE line: {raw_line!r}")
        values[key.strip()] = value.strip().strip("\"'")
    try:
        return ControlPlaneVersions(kubernetes=values["KUBERNETES_VERSION"], etcd=values["ETCD_VERSION"])
    except KeyError as missing:
        raise ControlPlaneError(f"{path}: {missing.args[0]} is not set") from None


def cache_root() -> Path:
    """Where ``build-controlplane.sh`` installs binaries: outside the clone, shared by every checkout."""
    base = os.environ.get("PVE_OPERATOR_CACHE_DIR") or str(Path.home() / ".cache" / "pve-operator")
    return Path(base) / "controlplane"


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Paths of the cached binaries and the versions they were built for."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    versions: ControlPlaneVersions


def controlplane_binaries(versions: ControlPlaneVersions | None = None) -> ControlPlaneBinaries:
    """Locate the cached binaries (same layout as ``build-controlplane.sh``), or explain how to build them.

    Raises:
        ControlPlaneBinariesMissing: when any binary is absent, telling the user to run ``make controlplane``.
    """
    versions = versions or read_versions()
    root = cache_root()
    k8s_bin = root / f"k8s-{versions.kubernetes}" / "bin"
    binaries = ControlPlaneBinaries(
        kube_apiserver=k8s_bin / "kube-apiserver",
        kubectl=k8s_bin / "kubectl",
        etcd=root / f"etcd-{versions.etcd}" / "bin" / "etcd",
        versions=versions,
    )
    missing = [
        str(path) for path in (binaries.kube_apiserver, binaries.kubectl, binaries.etcd) if not os.access(path, os.X_OK)
    ]
    if missing:
        raise ControlPlaneBinariesMissing(
            "local control plane binaries are missing (kubernetes "
            f"{versions.kubernetes}, etcd {versions.etcd}): {', '.join(missing)}. "
            "Build them once with `make controlplane` (bash hack/build-controlplane.sh; 10-30 min cold)."
        )
    return binaries


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller must cope with losing a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port now (used to check that stop() released it).

    SO_REUSEADDR, as Go and etcd servers set it: connections in TIME_WAIT on the port do not block a new
    listener, only a live socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class _KeyPair:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# ECDSA P-256: generated in microseconds (RSA-2048 takes ~0.1 s each) and accepted by Go, OpenSSL and the
# apiserver's service-account signer (ES256).
def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # Backdate a little so a slightly skewed clock in another process never sees a "not yet valid" cert.
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=365)


def _make_ca(common_name: str) -> _KeyPair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _KeyPair(certificate, key)


def _make_leaf(
    ca: _KeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> _KeyPair:
    key = _new_key()
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return _KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class ControlPlanePki:
    """Files of the throw-away PKI under ``<state-dir>/pki``."""

    server_ca_cert: Path
    serving_cert: Path
    serving_key: Path
    client_ca_cert: Path
    admin_cert: Path
    admin_key: Path
    service_account_public_key: Path
    service_account_signing_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by us (private keys, kubeconfigs with credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate_pki(directory: Path) -> ControlPlanePki:
    """Create a serving CA + cert (127.0.0.1/localhost), a client CA + admin cert, and a service-account key.

    Two CAs keep the roles apart, as in a kubeadm cluster: clients trust the serving CA, the apiserver trusts
    certificates from the client CA.
    """
    directory.mkdir(parents=True, exist_ok=True)
    server_ca = _make_ca("pve-operator-local-server-ca")
    serving = _make_leaf(
        server_ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[
            x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    client_ca = _make_ca("pve-operator-local-client-ca")
    admin = _make_leaf(
        client_ca,
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_COMMON_NAME),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _new_key()

    pki = ControlPlanePki(
        server_ca_cert=directory / "server-ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        client_ca_cert=directory / "client-ca.crt",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        service_account_public_key=directory / "sa.pub",
        service_account_signing_key=directory / "sa.key",
    )
    pki.server_ca_cert.write_bytes(server_ca.cert_pem)
    pki.serving_cert.write_bytes(serving.cert_pem)
    _write_private(pki.serving_key, serving.key_pem)
    pki.client_ca_cert.write_bytes(client_ca.cert_pem)
    pki.admin_cert.write_bytes(admin.cert_pem)
    _write_private(pki.admin_key, admin.key_pem)
    pki.service_account_public_key.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _write_private(
        pki.service_account_signing_key,
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return pki


# ---------------------------------------------------------------------------------------------------------
# kubeconfigs


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_kubeconfig(
    path: Path, cluster: Mapping[str, Any], user: Mapping[str, Any], user_name: str, namespace: str | None
) -> Path:
    context: dict[str, Any] = {"cluster": KUBECONFIG_CLUSTER, "user": user_name}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBECONFIG_CLUSTER, "cluster": dict(cluster)}],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [{"name": KUBECONFIG_CLUSTER, "context": context}],
        "current-context": KUBECONFIG_CLUSTER,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, yaml.safe_dump(document, sort_keys=False).encode("utf-8"))
    return path


def _current_cluster(kubeconfig: Path) -> dict[str, Any]:
    """The cluster entry of the current context, with file references made absolute."""
    document = yaml.safe_load(kubeconfig.read_text(encoding="utf-8")) or {}
    contexts = {entry["name"]: entry.get("context", {}) for entry in document.get("contexts") or []}
    clusters = {entry["name"]: entry.get("cluster", {}) for entry in document.get("clusters") or []}
    current = document.get("current-context")
    if current not in contexts:
        raise ControlPlaneError(f"{kubeconfig}: current-context {current!r} is not defined")
    cluster_name = contexts[current].get("cluster")
    if cluster_name not in clusters:
        raise ControlPlaneError(f"{kubeconfig}: cluster {cluster_name!r} of context {current!r} is not defined")
    cluster = dict(clusters[cluster_name])
    # kubectl resolves relative paths against the kubeconfig's directory; the copy may live elsewhere.
    if "certificate-authority" in cluster:
        cluster["certificate-authority"] = str((kubeconfig.parent / cluster["certificate-authority"]).resolve())
    return cluster


def kubeconfig_for_token(
    token: str,
    path: Path,
    *,
    base_kubeconfig: Path | None = None,
    namespace: str | None = None,
    user_name: str = "token-user",
) -> Path:
    """Write a kubeconfig that authenticates with a bearer token (e.g. from ``kubectl create token SA``).

    The cluster (server URL and CA) is copied from the current context of ``base_kubeconfig`` (default:
    ``$KUBECONFIG``), so this works for the local control plane and for any existing cluster alike. Used to
    run the operator with exactly the RBAC of its ServiceAccount instead of as cluster admin.
    """
    if base_kubeconfig is None:
        env_path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if not env_path:
            raise ControlPlaneError("kubeconfig_for_token: no base_kubeconfig given and KUBECONFIG is not set")
        base_kubeconfig = Path(env_path)
    return _write_kubeconfig(path, _current_cluster(base_kubeconfig), {"token": token}, user_name, namespace)


# ---------------------------------------------------------------------------------------------------------
# processes


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: rely on atexit alone
        return None
    return prctl


# Resolved once in the parent: the forked child must not dlopen() or import anything before exec.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
    """Ask Linux to SIGTERM the child when the thread that started it dies (even by SIGKILL).

    atexit covers normal interpreter exits; this covers `kill -9` of the test runner or `make demo`.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@dataclass
class _Managed:
    """One child process, leader of its own process group, logging to a file.

    Only stop() reaps the leader. Until then an exited leader stays a zombie, which keeps its PID (= the
    process group id) from being reused, so signalling the group can never hit an unrelated process.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_status(self) -> int | None:
        """The leader's exit code (negative: killed by that signal) if it has exited, without reaping it."""
        if self.process.returncode is not None:
            return self.process.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return self.process.poll()
        if info is None:
            return None
        return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status

    def stop(self, grace_s: float) -> None:
        """SIGTERM the whole group, wait up to grace_s, then SIGKILL; always reap and close the log."""
        try:
            if self.exit_status() is None:
                self._signal_group(signal.SIGTERM)
                if not self._wait_exit(grace_s):
                    self._signal_group(signal.SIGKILL)
                    self._wait_exit(None)
            if self.process.returncode is None:
                # The leader is a zombie, so its group id is still ours: clear out anything it forked.
                self._signal_group(signal.SIGKILL)
            self.process.wait()
        finally:
            self.log_file.close()

    def _wait_exit(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.exit_status() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def _spawn(name: str, argv: Sequence[str], log_path: Path) -> _Managed:
    log_file = log_path.open("ab")
    # PR_SET_PDEATHSIG is tied to the *thread* that forks, so only use it from the main thread; otherwise a
    # short-lived worker thread would take the control plane down when it exits. atexit still applies.
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: stop() signals the whole group
            preexec_fn=preexec,  # PR_SET_PDEATHSIG, main thread only (see above)
            close_fds=True,
        )
    except BaseException:
        log_file.close()
        raise
    return _Managed(name, process, log_path, log_file)


# Every LocalControlPlane still running; stopped at interpreter exit so a forgotten stop() or an exception
# in a test session never leaves etcd/kube-apiserver running.
_RUNNING: set[LocalControlPlane] = set()
_RUNNING_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for plane in running:
        with contextlib.suppress(Exception):
            plane.stop()


atexit.register(_stop_all_at_exit)


class LocalControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin kubeconfig; a context manager.

    Args:
        state_dir: where PKI, etcd data, logs and the kubeconfig go. Default: a temporary directory removed by
            stop(). A given directory is kept (its etcd data is wiped at start(): every start is a fresh
            cluster).
        binaries: the binaries to run; default :func:`controlplane_binaries`.
        start_timeout_s: deadline for etcd and then kube-apiserver to report ready.
        stop_grace_s: how long each process gets after SIGTERM before SIGKILL.
        extra_apiserver_args: appended to the kube-apiserver command line (e.g. feature gates).
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        binaries: ControlPlaneBinaries | None = None,
        start_timeout_s: float = 120.0,
        stop_grace_s: float = 15.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self._requested_state_dir = state_dir
        self._binaries = binaries
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self._processes: list[_Managed] = []
        self._pids: dict[str, int] = {}
        self._ports: dict[str, int] = {}
        self._pki: ControlPlanePki | None = None
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self.startup_seconds: float | None = None

    # -- public properties ------------------------------------------------------------------------------

    @property
    def binaries(self) -> ControlPlaneBinaries:
        if self._binaries is None:
            self._binaries = controlplane_binaries()
        return self._binaries

    @property
    def kubectl_path(self) -> Path:
        return self.binaries.kubectl

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("the control plane is not started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        """The apiserver URL, e.g. https://127.0.0.1:38123."""
        if self._server is None:
            raise ControlPlaneError("the control plane is not started")
        return self._server

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._state_dir

    @property
    def pki(self) -> ControlPlanePki:
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started")
        return self._pki

    @property
    def pids(self) -> dict[str, int]:
        """PIDs (= process group ids) of etcd and kube-apiserver of the latest start(); kept after stop()."""
        return dict(self._pids)

    @property
    def ports(self) -> dict[str, int]:
        """Loopback ports of the latest start(): etcd-client, etcd-peer, apiserver; kept after stop()."""
        return dict(self._ports)

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(m.exit_status() is None for m in self._processes)

    def log_path(self, component: str) -> Path:
        """Log file of "etcd" or "kube-apiserver"."""
        return self.state_dir / f"{component}.log"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG set, and our kubectl first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join(filter(None, [str(self.kubectl_path.parent), env.get("PATH", "")]))
        return env

    def kubeconfig_for_token(self, token: str, path: Path, namespace: str | None = None) -> Path:
        """Write a kubeconfig for this apiserver that authenticates with a (ServiceAccount) bearer token."""
        return kubeconfig_for_token(token, path, base_kubeconfig=self.kubeconfig, namespace=namespace)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalControlPlane:
        """Start etcd and kube-apiserver and wait for /readyz; on any failure, stop what was started."""
        if self._processes:
            raise ControlPlaneError("the control plane is already started")
        binaries = self.binaries
        started = time.monotonic()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._prepare_state_dir()
            self._pki = generate_pki(self.state_dir / "pki")
            for attempt in range(1, _PORT_RETRY_ATTEMPTS + 1):
                try:
                    self._start_processes(binaries, time.monotonic() + self.start_timeout_s)
                    break
                except _PortInUse:
                    self._stop_processes()
                    if attempt == _PORT_RETRY_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, grace period, SIGKILL). Idempotent."""
        try:
            self._stop_processes()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            # Nothing is served any more; a given state dir keeps its files (logs, PKI) for post-mortems.
            self._server = None
            self._kubeconfig = None
            if self._owns_state_dir and self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
                self._state_dir = None
                self._pki = None
            self._owns_state_dir = False

    # -- internals ---------------------------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        if self._requested_state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="pve-operator-controlplane-"))
            self._owns_state_dir = True
        else:
            self._state_dir = self._requested_state_dir.resolve()
            self._state_dir.mkdir(parents=True, exist_ok=True)
            # Each start is a fresh cluster; old etcd data would also pin old member URLs.
            shutil.rmtree(self._state_dir / "etcd-data", ignore_errors=True)
            for component in ("etcd", "kube-apiserver"):
                self.log_path(component).unlink(missing_ok=True)

    def _stop_processes(self) -> None:
        # Reverse start order: kube-apiserver shuts down while its storage is still there.
        while self._processes:
            self._processes.pop().stop(self.stop_grace_s)

    def _start_processes(self, binaries: ControlPlaneBinaries, deadline: float) -> None:
        state = self.state_dir
        pki = self.pki
        etcd_client, etcd_peer, apiserver = (free_loopback_port() for _ in range(3))
        self._ports = {"etcd-client": etcd_client, "etcd-peer": etcd_peer, "apiserver": apiserver}
        etcd_url = f"http://{LOOPBACK}:{etcd_client}"
        peer_url = f"http://{LOOPBACK}:{etcd_peer}"
        shutil.rmtree(state / "etcd-data", ignore_errors=True)

        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=pve-operator-local",
                f"--data-dir={state / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=pve-operator-local={peer_url}",
                # Test data is throw-away: skipping fsync makes etcd (and so every API write) much faster.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait_until(deadline, etcd, lambda: _http_ok(f"{etcd_url}/health", b'"health":"true"'))

        server = f"https://{LOOPBACK}:{apiserver}"
        kube_apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={apiserver}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.client_ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # No controller-manager creates ServiceAccounts/tokens, so this plugin would reject pods.
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={server}/",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_signing_key}",
                # The `kubernetes` Service endpoints reconciler rejects loopback addresses and would log
                # errors forever; nothing in-cluster needs that Service here.
                "--endpoint-reconciler-type=none",
                *self.extra_apiserver_args,
            ],
        )
        self._server = server
        ssl_context = ssl.create_default_context(cafile=str(pki.server_ca_cert))
        ssl_context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._wait_until(deadline, kube_apiserver, lambda: _http_ok(f"{server}/readyz", b"ok", ssl_context))
        self._kubeconfig = _write_kubeconfig(
            state / "kubeconfig",
            {"server": server, "certificate-authority-data": _b64(pki.server_ca_cert.read_bytes())},
            {
                "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                "client-key-data": _b64(pki.admin_key.read_bytes()),
            },
            KUBECONFIG_ADMIN_USER,
            namespace=None,
        )

    def _spawn(self, name: str, argv: Sequence[str]) -> _Managed:
        managed = _spawn(name, argv, self.log_path(name))
        self._processes.append(managed)
        self._pids[name] = managed.pid
        return managed

    def _wait_until(self, deadline: float, managed: _Managed, ready: Callable[[], bool]) -> None:
        while True:
            returncode = managed.exit_status()
            if returncode is not None:
                log_tail = _tail(managed.log_path)
                if "address already in use" in log_tail:
                    raise _PortInUse(f"{managed.name}: a picked port was taken meanwhile")
                raise ControlPlaneError(
                    f"{managed.name} exited with code {returncode} during start-up; "
                    f"last lines of {managed.log_path}:\n{log_tail}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"{managed.name} not ready after {self.start_timeout_s:.0f}s; "
                    f"last lines of {managed.log_path}:\n{_tail(managed.log_path)}"
                )
            time.sleep(_POLL_INTERVAL_S)


def _http_ok(url: str, expected: bytes, context: ssl.SSLContext | None = None) -> bool:
    """GET url; True when it answers 200 with `expected` in the body. Connection errors mean "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200 and expected in response.read()
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


# ---------------------------------------------------------------------------------------------------------
# CLI


def _serve(state_dir: Path | None, start_timeout_s: float) -> int:
    stop_requested = threading.Event()

    def exit_now(signum: int, _frame: FrameType | None) -> None:
        # During start(): unwind through start()'s cleanup instead of dying with half a control plane.
        raise SystemExit(128 + signum)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        print(f"local-control-plane: {signal.Signals(signum).name} received, stopping", file=sys.stderr)
        stop_requested.set()

    signal.signal(signal.SIGINT, exit_now)
    signal.signal(signal.SIGTERM, exit_now)
    plane = LocalControlPlane(state_dir, start_timeout_s=start_timeout_s)
    try:
        try:
            plane.start()
        except ControlPlaneError as error:
            print(f"local-control-plane: {error}", file=sys.stderr)
            return 1
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        print(
            f"local-control-plane: kubernetes {plane.binaries.versions.kubernetes} at {plane.server} "
            f"ready in {plane.startup_seconds:.1f}s (etcd pid {plane.pids['etcd']}, kube-apiserver pid "
            f"{plane.pids['kube-apiserver']}); logs in {plane.state_dir}; Ctrl-C to stop",
            file=sys.stderr,
        )
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(f"export PATH={plane.kubectl_path.parent}:$PATH")
        sys.stdout.flush()
        while not stop_requested.wait(1.0):
            if not plane.running:
                for component in ("etcd", "kube-apiserver"):
                    print(
                        f"local-control-plane: {component} log tail:\n{_tail(plane.log_path(component))}",
                        file=sys.stderr,
                    )
                print("local-control-plane: a control plane process exited unexpectedly", file=sys.stderr)
                return 1
        return 0
    finally:
        # Ignore further signals: a second Ctrl-C must not interrupt the shutdown half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        plane.stop()
        print("local-control-plane: stopped", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local_control_plane.py",
        description="Run a local etcd + kube-apiserver built by `make controlplane`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start, print `export KUBECONFIG=...`, serve until SIGINT/SIGTERM")
    up.add_argument(
        "--state-dir",
        type=Path,
        help="keep PKI, logs and kubeconfig here (default: a temporary directory, removed on exit)",
    )
    up.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for readiness")
    commands.add_parser("binaries", help="print the binary paths, or fail if `make controlplane` is needed")
    args = parser.parse_args(argv)
    if args.command == "binaries":
        try:
            binaries = controlplane_binaries()
        except ControlPlaneBinariesMissing as error:
            print(error, file=sys.stderr)
            return 1
        print(f"KUBE_APISERVER={binaries.kube_apiserver}\nKUBECTL={binaries.kubectl}\nETCD={binaries.etcd}")
        return 0
    return _serve(args.state_dir, args.start_timeout)


if __name__ == "__main__":
    sys.exit(main())

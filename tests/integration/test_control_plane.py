"""The local Kubernetes control plane: built binaries, start-up, API behaviour, and clean shutdown.

These run against the session's `kube` cluster (the local etcd + kube-apiserver by default) and start a few
extra, independent control planes to check that nothing survives stop(), a failed start, the CLI's SIGTERM,
or even a SIGKILL of the Python process that owns them.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from local_control_plane import (
    BUILD_SCRIPT,
    ControlPlaneBinariesMissing,
    ControlPlaneError,
    LocalControlPlane,
    controlplane_binaries,
    port_is_free,
    read_versions,
)
from tests.fixtures.kube import KubeCluster, KubectlError, wait_for

pytestmark = pytest.mark.kube

CLI = Path(__file__).resolve().parents[2] / "hack" / "local_control_plane.py"
PINNED = read_versions()


def _gone(pid: int) -> bool:
    """True when no process (or only an unreaped zombie) has this PID."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _assert_nothing_left(plane: LocalControlPlane) -> None:
    assert set(plane.pids) == {"etcd", "kube-apiserver"}, plane.pids
    for name, pid in plane.pids.items():
        assert _gone(pid), f"{name} (pid {pid}) still running after stop()"
        assert _group_empty(pid), f"process group of {name} (pgid {pid}) is not empty after stop()"
    for name, port in plane.ports.items():
        assert port_is_free(port), f"{name} port {port} still bound after stop()"


# -- the session cluster --------------------------------------------------------------------------------


def test_apiserver_is_ready_and_backed_by_etcd(kube: KubeCluster) -> None:
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    verbose = kube.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "[+]etcd ok" in verbose
    assert "[+]poststarthook/rbac/bootstrap-roles ok" in verbose


def test_kubectl_and_apiserver_report_the_pinned_version(kube: KubeCluster) -> None:
    versions = kube.kubectl_json("version")
    client = versions["clientVersion"]
    print(f"kubectl: {client['gitVersion']} built {client['buildDate']} with {client['goVersion']}")
    assert client["gitVersion"] == PINNED.kubernetes
    assert client["gitTreeState"] == "clean"
    if kube.local is None:
        pytest.skip("--kubeconfig cluster: its server version is not pinned by this project")
    server = versions["serverVersion"]
    print(f"kube-apiserver: {server['gitVersion']} built {server['buildDate']} with {server['goVersion']}")
    assert server["gitVersion"] == PINNED.kubernetes
    assert (server["major"], server["minor"]) == tuple(PINNED.kubernetes.removeprefix("v").split(".")[:2])


def test_admin_kubeconfig_is_cluster_admin(kube: KubeCluster) -> None:
    user = kube.kubectl_json("auth", "whoami")["status"]["userInfo"]
    if kube.local is not None:
        assert user["username"] == "admin"
        assert "system:masters" in user["groups"]
    assert kube.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"


def test_configmap_create_get_and_apply(kube: KubeCluster, kube_namespace: str) -> None:
    kube.kubectl("create", "configmap", "greeting", "-n", kube_namespace, "--from-literal=hello=world")
    created = kube.kubectl_json("get", "configmap", "greeting", "-n", kube_namespace)
    assert created["data"] == {"hello": "world"}
    assert created["metadata"]["namespace"] == kube_namespace

    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  size: large\n"
    kube.apply(manifest, namespace=kube_namespace, server_dry_run=True)
    dry = kube.kubectl("get", "configmap", "applied", "-n", kube_namespace, check=False)
    assert dry.returncode != 0 and "NotFound" in dry.stderr, "a server dry-run must not persist anything"

    kube.apply(manifest, namespace=kube_namespace)
    applied = kube.kubectl_json("get", "configmap", "applied", "-n", kube_namespace)
    assert applied["data"] == {"size": "large"}


def test_kubectl_errors_carry_the_apiserver_message(kube: KubeCluster, kube_namespace: str) -> None:
    with pytest.raises(KubectlError, match=r'configmaps "absent" not found'):
        kube.kubectl("get", "configmap", "absent", "-n", kube_namespace)


def test_service_account_token_kubeconfig_is_bound_by_rbac(
    kube: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    kube.kubectl("create", "serviceaccount", "robot", "-n", ns)
    token = kube.kubectl("create", "token", "robot", "-n", ns, "--duration=10m").stdout.strip()
    kubeconfig = kube.kubeconfig_for_token(token, tmp_path / "robot.kubeconfig", namespace=ns)
    robot = KubeCluster(
        kubeconfig=kubeconfig, env={**kube.env, "KUBECONFIG": str(kubeconfig)}, kubectl_path=kube.kubectl_path
    )

    user = robot.kubectl_json("auth", "whoami")["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{ns}:robot"

    denied = robot.kubectl("get", "configmaps", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr

    kube.kubectl("create", "role", "configmap-reader", "--verb=get,list", "--resource=configmaps", "-n", ns)
    kube.kubectl(
        "create",
        "rolebinding",
        "robot-reads",
        "--role=configmap-reader",
        f"--serviceaccount={ns}:robot",
        "-n",
        ns,
    )
    # The RBAC authorizer reads bindings from an informer cache: allow it a moment to see the new one.
    wait_for(
        lambda: robot.kubectl("get", "configmaps", check=False).returncode == 0,
        what="the RoleBinding to take effect",
    )
    assert robot.kubectl("auth", "can-i", "delete", "configmaps", check=False).stdout.strip() == "no"


# -- independent control planes ---------------------------------------------------------------------------


def test_independent_control_plane_stops_cleanly(kube: KubeCluster) -> None:
    plane = LocalControlPlane()
    with plane:
        print(f"independent control plane: start -> ready {plane.startup_seconds:.2f}s at {plane.server}")
        state_dir = plane.state_dir
        assert plane.running
        for name, pid in plane.pids.items():
            assert not _gone(pid), f"{name} is not running"
        result = subprocess.run(
            [str(plane.kubectl_path), "get", "namespace", "default", "-o", "name"],
            env=plane.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout.strip() == "namespace/default"
    _assert_nothing_left(plane)
    assert not state_dir.exists(), "the temporary state directory must be removed by stop()"
    plane.stop()  # idempotent
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok", "the session cluster was affected"


def test_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    plane = LocalControlPlane(tmp_path / "state", extra_apiserver_args=["--no-such-flag"])
    with pytest.raises(ControlPlaneError, match=r"(?s)kube-apiserver exited.*unknown flag: --no-such-flag"):
        plane.start()
    _assert_nothing_left(plane)
    assert (tmp_path / "state" / "kube-apiserver.log").is_file(), "a given state dir (and its logs) is kept"


def test_missing_binaries_tell_the_user_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVE_OPERATOR_CACHE_DIR", str(tmp_path))
    with pytest.raises(ControlPlaneBinariesMissing, match="make controlplane"):
        controlplane_binaries()
    with pytest.raises(ControlPlaneBinariesMissing, match="make controlplane"):
        LocalControlPlane().start()


def _start_cli(state_dir: Path, stderr_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """Run `local_control_plane.py up` and return it with the KUBECONFIG it exported."""
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(CLI), "up", "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 1.0)
        if readable:
            line = process.stdout.readline()
            if not line:
                break
            match = re.fullmatch(r"export KUBECONFIG=(.+)\n", line)
            if match:
                return process, Path(match.group(1))
    process.kill()
    process.wait()
    pytest.fail(f"`up` printed no KUBECONFIG; stderr:\n{stderr_path.read_text()}")


def _children(process: subprocess.Popen[str]) -> list[psutil.Process]:
    children = psutil.Process(process.pid).children(recursive=True)
    assert sorted(child.name() for child in children) == ["etcd", "kube-apiserver"]
    return children


def test_cli_up_serves_until_sigterm_then_stops_everything(tmp_path: Path) -> None:
    process, kubeconfig = _start_cli(tmp_path / "state", tmp_path / "up.stderr")
    try:
        assert kubeconfig == tmp_path / "state" / "kubeconfig"
        ready = subprocess.run(
            [str(controlplane_binaries().kubectl), f"--kubeconfig={kubeconfig}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert ready.stdout.strip() == "ok"
        children = _children(process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (tmp_path / "up.stderr").read_text()
    print(stderr)
    assert "SIGTERM received, stopping" in stderr and "stopped" in stderr
    for child in children:
        assert _gone(child.pid), f"{child.name()} (pid {child.pid}) outlived `up`"


def test_control_plane_dies_with_a_killed_owner(tmp_path: Path) -> None:
    process, _ = _start_cli(tmp_path / "state", tmp_path / "up.stderr")
    children = _children(process)
    process.kill()  # SIGKILL: no atexit, no signal handler; only PR_SET_PDEATHSIG can clean up
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=60)
    assert [child for child in alive if not _gone(child.pid)] == [], "children outlived a SIGKILLed owner"


# -- the build script ---------------------------------------------------------------------------------------


def test_second_build_run_is_a_noop() -> None:
    binaries = controlplane_binaries()
    paths = [binaries.kube_apiserver, binaries.kubectl, binaries.etcd]
    mtimes_before = [path.stat().st_mtime_ns for path in paths]
    # No Go toolchain reachable: a cached run must not need one.
    env = {**os.environ, "GO": "/nonexistent/go", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to build" in result.stderr
    assert result.stdout.splitlines() == [
        f"KUBE_APISERVER={binaries.kube_apiserver}",
        f"KUBECTL={binaries.kubectl}",
        f"ETCD={binaries.etcd}",
    ]
    assert [path.stat().st_mtime_ns for path in paths] == mtimes_before

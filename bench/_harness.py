"""Shared set-up of the operator benchmarks: control plane + pve_sim + the operator as a process.

Everything is real: the local kube-apiserver and etcd (hack/), pve_sim over HTTPS, kubectl, and
``python -m pve_operator`` in its own process (so its RSS and CPU are its own). Loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "operator", REPO / "simulator", REPO / "hack", REPO):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.fixtures.operator import policy_manifest, pool_manifest  # noqa: E402

from local_control_plane import LocalControlPlane  # noqa: E402
from pve_sim.scenario import Scenario, parse_scenario  # noqa: E402
from pve_sim.server import SimServer  # noqa: E402

LAB = REPO / "examples" / "scenarios" / "two-nodes.yaml"


def lab_scenario(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(LAB.read_text())
    assert isinstance(data, dict)
    data.update(changes)
    return data


def big_lab(node_memory_gib: int = 512, cores: int = 128, stats_lag_seconds: float = 0.0) -> Scenario:
    """The lab's two nodes, large enough for 1,000 small CTs, without the foreign CT."""
    data = lab_scenario()
    data["containers"] = []
    data["cluster"]["statsLagSeconds"] = stats_lag_seconds
    for node in data["nodes"]:
        node["memoryGiB"] = node_memory_gib
        node["cores"] = cores
    for storage in data["storages"]:
        storage["capacityGiB"] = 100_000
    return parse_scenario(data, "<bench>")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A control plane with the CRDs installed."""

    plane: LocalControlPlane

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.plane.kubectl_path), f"--kubeconfig={self.plane.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env=self.plane.env(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, namespace: str, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json")))


@contextmanager
def cluster() -> Iterator[Cluster]:
    with LocalControlPlane() as plane:
        c = Cluster(plane)
        c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield c


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextmanager
def operator(c: Cluster, namespace: str, log_dir: Path, **env: str) -> Iterator[Operator]:
    port = free_port()
    log = log_dir / f"operator-{namespace}.log"
    full_env = {
        **os.environ,
        **c.plane.env(),
        "PYTHONPATH": str(REPO / "operator"),
        "PVE_OPERATOR_METRICS_PORT": str(port),
        "PVE_OPERATOR_RECONCILE_INTERVAL": "2",
        "PVE_OPERATOR_MONITOR_TICK": "1",
        **env,
    }
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pve_operator", "run", "-n", namespace],
            cwd=REPO,
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    op = Operator(proc, port, log)
    try:
        wait(lambda: _metrics_up(op), 60, "operator metrics endpoint")
        yield op
    finally:
        op.stop()


def _metrics_up(op: Operator) -> bool:
    try:
        op.metrics()
        return True
    except OSError:
        return False


def wait(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1) -> float:
    """Poll until true; return the seconds it took. Raises TimeoutError naming ``what``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


def connect(c: Cluster, namespace: str, sim: SimServer, **pool_kwargs: Any) -> None:
    c.kubectl("create", "namespace", namespace)
    token = next(t.secret for u in sim.scenario.users for t in u.tokens if u.userid == "ctoperator@pve")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pve-credentials"},
        "stringData": {"tokenId": "ctoperator@pve!operator", "tokenSecret": token},
    }
    ca = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pve-ca"},
        "data": {"ca.crt": Path(sim.ca_path).read_text()},
    }
    c.apply(namespace, secret, ca, pool_manifest("lab", endpoint=sim.url, **pool_kwargs))


_apis: dict[tuple[str, int, str], Any] = {}


def sim_api(sim: SimServer) -> Any:
    """The real proxmoxer client on ``sim`` as root@pam (one per simulator)."""
    import proxmoxer

    key = (sim.host, sim.port, str(sim.ca_path))  # not id(sim): a new simulator may reuse a freed id
    if key not in _apis:
        root = next(u for u in sim.scenario.users if u.userid == "root@pam")
        _apis[key] = proxmoxer.ProxmoxAPI(
            sim.host, port=sim.port, user="root@pam", password=root.password, verify_ssl=str(sim.ca_path)
        )
    return _apis[key]


def policy(name: str, **kwargs: Any) -> dict[str, Any]:
    return policy_manifest(name, **kwargs)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


__all__ = [
    "Cluster",
    "Operator",
    "SimServer",
    "big_lab",
    "cluster",
    "connect",
    "field",
    "operator",
    "policy",
    "sim_api",
    "wait",
]

"""Record ProxmoxServerPool and ContainerPolicy objects from a real run, for the Argo CD health tests.

Runs the real thing (local control plane, pve_sim, the operator as a process), drives it into the
states Argo CD must show (policy creating / ready / PoolFull, pool ready / unreachable), and writes
each object as the API server returns it (minus server bookkeeping) to tests/data/argocd/recorded-*.json.

    .venv/bin/python hack/record_status_objects.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "simulator"), str(REPO / "hack"), str(REPO)]

import yaml  # noqa: E402
from tests.fixtures.operator import policy_manifest, pool_manifest  # noqa: E402

from local_control_plane import LocalControlPlane  # noqa: E402
from pve_sim.server import SimServer  # noqa: E402

OUT = REPO / "tests" / "data" / "argocd"
NS = "record"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalControlPlane() as plane:
        env = {**os.environ, **plane.env()}

        def kubectl(*args: str, stdin: str | None = None) -> str:
            return subprocess.run(
                [str(plane.kubectl_path), *args], input=stdin, capture_output=True, text=True, env=env, check=True
            ).stdout

        def get(kind: str, name: str) -> dict[str, Any]:
            return dict(json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json")))

        def wait(predicate: Any, what: str, timeout: float = 120) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError(what)
                time.sleep(0.3)

        def save(obj: dict[str, Any], name: str) -> None:
            meta = obj["metadata"]
            for key in ("managedFields", "uid", "resourceVersion", "creationTimestamp", "annotations", "finalizers"):
                meta.pop(key, None)
            obj.get("status", {}).pop("lastHandledConfiguration", None)
            (OUT / f"recorded-{name}.json").write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
            print("wrote", name)

        kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all")
        kubectl("create", "namespace", NS)
        sim = SimServer(REPO / "examples" / "scenarios" / "two-nodes.yaml", time_scale=0.2).start()
        token = next(t.secret for u in sim.scenario.users for t in u.tokens)
        objects = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pve-credentials"},
                "stringData": {"tokenId": "ctoperator@pve!operator", "tokenSecret": token},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "pve-ca"},
                "data": {"ca.crt": Path(sim.ca_path).read_text()},
            },
            pool_manifest("lab", endpoint=sim.url),
        ]
        kubectl("apply", "-n", NS, "-f", "-", stdin=yaml.safe_dump_all(objects))
        with (Path(tmp) / "operator.log").open("wb") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "pve_operator", "run", "-n", NS],
                env={
                    **env,
                    "PYTHONPATH": str(REPO / "operator"),
                    "PVE_OPERATOR_METRICS_PORT": "0",
                    "PVE_OPERATOR_RECONCILE_INTERVAL": "2",
                    "PVE_OPERATOR_MONITOR_TICK": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        try:

            def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
                return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})

            wait(lambda: condition(get("proxmoxserverpool", "lab"), "Ready").get("status") == "True", "pool ready")
            save(get("proxmoxserverpool", "lab"), "proxmoxserverpool-ready")
            kubectl("apply", "-n", NS, "-f", "-", stdin=yaml.safe_dump(policy_manifest("web", replicas=6)))
            wait(lambda: condition(get("containerpolicy", "web"), "Progressing").get("status") == "True", "creating")
            save(get("containerpolicy", "web"), "containerpolicy-creating")
            wait(lambda: condition(get("containerpolicy", "web"), "Ready").get("status") == "True", "policy ready")
            save(get("containerpolicy", "web"), "containerpolicy-ready")
            big = policy_manifest("big", replicas=40, memory_mib=4096, vmid_start=3200, vmid_end=3299)
            kubectl("apply", "-n", NS, "-f", "-", stdin=yaml.safe_dump(big))
            wait(lambda: condition(get("containerpolicy", "big"), "Progressing").get("reason") == "PoolFull", "full")
            save(get("containerpolicy", "big"), "containerpolicy-pool-full")
            sim.stop()
            wait(lambda: condition(get("proxmoxserverpool", "lab"), "Ready").get("reason") == "Unreachable", "down")
            save(get("proxmoxserverpool", "lab"), "proxmoxserverpool-unreachable")
            wait(lambda: condition(get("containerpolicy", "web"), "Ready").get("reason") == "Unreachable", "web down")
            save(get("containerpolicy", "web"), "containerpolicy-unreachable")
        finally:
            os.killpg(operator.pid, signal.SIGTERM)
            operator.wait(30)


if __name__ == "__main__":
    main()

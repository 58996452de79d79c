"""``make demo``: the whole product in one command, on this machine, without Docker or Proxmox.

Starts (or reuses) a Kubernetes API, pve_sim with the demo scenario (the lab's two nodes and a load
story), installs the CRDs, applies the samples (credentials, CA, the lab pool, the web policy),
runs the operator, and shows a live view: CTs per node, node usage, and the operator's actions with
their reasons. Ctrl-C stops and removes everything it started.

Environment:
  DEMO_SECONDS=N            end after N seconds and exit non-zero unless the expected creations,
                            migration, offload and restore all happened (a smoke test).
  DEMO_USE_CURRENT_CONTEXT=1  use the current kube context (e.g. kind) instead of a local control plane.
  DEMO_TIME_SCALE=0.1       real seconds per simulated second of pve_sim (0.1 = 10x faster).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "hack")]

import yaml  # noqa: E402

from local_control_plane import LocalControlPlane  # noqa: E402
from pve_sim.server import SimServer  # noqa: E402

NAMESPACE = "pve-demo"
SCENARIO = REPO / "examples" / "scenarios" / "demo.yaml"
SAMPLES = REPO / "deploy" / "samples"
EXPECTED = ("Create", "Migrate", "Offload", "Restore")


class Kubectl:
    def __init__(self, binary: str, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = env

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env, check=False
        )
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> dict[str, Any]:
        out = self("get", *args, "-o", "json", check=False)
        return dict(json.loads(out)) if out.strip() else {}


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((SAMPLES / name).read_text())
    assert isinstance(document, dict)
    return document


def install(kubectl: Kubectl, sim: SimServer) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("create", "namespace", NAMESPACE, check=False)
    token = next(t for u in sim.scenario.users for t in u.tokens if u.userid == "ctoperator@pve")
    secret = load("pve-credentials-secret.yaml")
    secret["stringData"] = {"tokenId": f"ctoperator@pve!{token.id}", "tokenSecret": token.secret}
    pool = load("proxmoxserverpool-lab.yaml")
    pool["spec"]["endpoint"] = sim.url
    # Demo pace: sample every 5 s, act after 3 samples, let a CT move again after 30 s.
    pool["spec"]["balancing"] = {"intervalSeconds": 5, "cooldownSeconds": 30}
    ca = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": pool["spec"]["tls"]["caConfigMapRef"]["name"]},
        "data": {pool["spec"]["tls"]["caConfigMapRef"]["key"]: Path(sim.ca_path).read_text()},
    }
    objects = [secret, ca, pool, load("containerpolicy-web.yaml")]
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(objects))


def render(kubectl: Kubectl, started: float, seen: set[str]) -> list[str]:
    pool = kubectl.json("proxmoxserverpool", "lab", "-n", NAMESPACE).get("status", {})
    policy = kubectl.json("containerpolicy", "web", "-n", NAMESPACE).get("status", {})
    lines = [f"pve-operator demo: {time.monotonic() - started:5.0f} s   (Ctrl-C stops and cleans up)", ""]
    dist = {d["node"]: d for d in policy.get("distribution", [])}
    lines.append(f"{'NODE':<10}{'CPU':>6}{'MEMORY':>8}  CTs (running/placed)")
    for node in pool.get("nodes", []):
        d = dist.get(node["name"], {})
        mem = node.get("memoryPercent")
        bar = "#" * int((mem or 0) / 5)
        lines.append(
            f"{node['name']:<10}{node.get('cpuPercent', 0):>5.0f}%{(mem or 0):>7.0f}%  "
            f"{d.get('running', 0)}/{d.get('replicas', 0)}  {bar}"
        )
    lines.append("")
    lines.append(
        f"policy web: desired {policy.get('desiredReplicas')}, running {policy.get('readyReplicas')}, "
        f"offloaded {policy.get('offloadedReplicas', 0)}, migrating {policy.get('migratingReplicas', 0)}"
    )
    lines.append("")
    lines.append("Recent actions:")
    actions = sorted(
        [*pool.get("recentActions", []), *policy.get("recentActions", [])], key=lambda a: a.get("time", "")
    )
    for action in actions[-10:]:
        lines.append(
            f"  {action.get('time', '')[11:19]} {action['action']:<8} CT {action.get('vmid')} "
            f"{action.get('result', ''):<9} {action.get('reason', '')[:110]}"
        )
    seen.update(a["action"] for a in actions if a.get("result") == "Succeeded")
    return lines


PROGRAM_START = time.monotonic()


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    time_scale = float(os.environ.get("DEMO_TIME_SCALE", "0.1"))
    use_context = os.environ.get("DEMO_USE_CURRENT_CONTEXT", "") == "1"
    interactive = sys.stdout.isatty() and not seconds
    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    workdir = Path(tempfile.mkdtemp(prefix="pve-demo-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, True)
        if use_context:
            env = dict(os.environ)
            binary = shutil.which("kubectl") or "kubectl"
            print("using the current kube context")
        else:
            plane = cleanup.enter_context(LocalControlPlane(state_dir=workdir / "controlplane"))
            env = {**os.environ, **plane.env()}
            binary = str(plane.kubectl_path)
            print(f"local control plane ready: export KUBECONFIG={plane.kubeconfig}")
        kubectl = Kubectl(binary, env)
        sim = SimServer(SCENARIO, time_scale=time_scale).start()
        cleanup.callback(sim.stop)
        print(f"pve_sim serving {sim.url} (scenario {SCENARIO.name}, time scale {time_scale})")
        install(kubectl, sim)
        log_path = workdir / "operator.log"
        with log_path.open("wb") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "pve_operator", "run", "-n", NAMESPACE, "--log-format", "plain"],
                env={
                    **env,
                    "PYTHONPATH": str(REPO / "operator"),
                    "PVE_OPERATOR_METRICS_PORT": "0",
                    "PVE_OPERATOR_RECONCILE_INTERVAL": "3",
                    "PVE_OPERATOR_MONITOR_TICK": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

        def stop_operator() -> None:
            if operator.poll() is None:
                os.killpg(operator.pid, signal.SIGTERM)
                try:
                    operator.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(operator.pid, signal.SIGKILL)

        cleanup.callback(stop_operator)
        if use_context:
            cleanup.callback(kubectl, "delete", "namespace", NAMESPACE, "--wait=false", check=False)
        started = time.monotonic()
        ready_after: float | None = None
        seen: set[str] = set()
        last = ""
        while not stop["now"] and (not seconds or time.monotonic() - started < seconds):
            if operator.poll() is not None:
                print(log_path.read_text()[-3000:])
                print("the operator exited unexpectedly")
                return 1
            lines = render(kubectl, started, seen)
            if ready_after is None and "running 9," in "\n".join(lines):
                ready_after = time.monotonic() - started
                lines.append(f"\nready: 9 of 9 CTs running {ready_after:.0f} s after the operator started")
            screen = "\n".join(lines)
            if interactive:
                print("\033[2J\033[H" + screen, flush=True)
            elif screen.split("\n", 1)[1] != last:
                print(screen + "\n", flush=True)
            last = screen.split("\n", 1)[1]
            if seconds and all(k in seen for k in EXPECTED):
                break
            time.sleep(2)
        if seconds:
            missing = [k for k in EXPECTED if k not in seen]
            elapsed = time.monotonic() - started
            if missing:
                print(f"demo FAILED after {elapsed:.0f} s: no successful {', '.join(missing)}")
                print("events:")
                print(kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False)[-6000:])
                print(log_path.read_text()[-4000:])
                return 1
            print(f"demo OK in {elapsed:.0f} s: creations, migration, offload and restore all happened")
            if ready_after is not None:
                total = ready_after + (started - PROGRAM_START)
                print(
                    f"time to ready (9 CTs running): {total:.1f} s from start "
                    f"({started - PROGRAM_START:.1f} s control plane, pve_sim and install; "
                    f"{ready_after:.1f} s for the operator)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: the whole product in one command, on this machine, without Docker or Proxmox.

Starts (or reuses) a Kubernetes API, pve_sim with the demo scenario (the lab's two nodes and a load
story), installs the CRDs, applies the samples (credentials, CA, the lab pool, the web policy),
runs the operator, and shows a live view: CTs per node, node usage against the pool's thresholds, every
ContainerPolicy of the pool, and the operator's actions with their reasons. The view's header always says
how to reach the demo cluster from another shell. Ctrl-C stops and removes everything it started, and
says what it stopped and removed.

On a terminal the view is redrawn in place (full width, alternate screen); when stdout is not a terminal
(CI, ``| tee``) it is a log: one line per new action and a state line when the counts change.
The rendering is in ``hack/demo_view.py`` (pure functions, unit-tested).

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "simulator"), str(REPO / "hack")]

import yaml  # noqa: E402

from demo_view import Access, LineLog, Snapshot, all_ready, render_frame, succeeded_kinds  # noqa: E402
from local_control_plane import LocalControlPlane  # noqa: E402
from pve_sim.server import SimServer  # noqa: E402

NAMESPACE = "pve-demo"
POOL = "lab"
SCENARIO = REPO / "examples" / "scenarios" / "demo.yaml"
SAMPLES = REPO / "deploy" / "samples"
EXPECTED = ("Create", "Migrate", "Offload", "Restore")
REFRESH_SECONDS = 2.0

PROGRAM_START = time.monotonic()


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while starting up."""


class Kubectl:
    def __init__(self, binary: str, env: dict[str, str], stop: threading.Event) -> None:
        self.binary = binary
        self.env = env
        self.stop = stop

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env, check=False
        )
        if check and result.returncode != 0:
            if self.stop.is_set():  # Ctrl-C reaches kubectl too (same process group): not an error
                raise Interrupted
            raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> dict[str, Any]:
        out = self("get", *args, "-o", "json", check=False)
        try:
            return dict(json.loads(out)) if out.strip() else {}
        except json.JSONDecodeError:
            return {}


class Cleanup:
    """What the demo started, stopped in reverse order at the end; each step says what it stopped or removed."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, stop: Callable[[], object]) -> None:
        self._steps.append((what, stop))

    def run(self, headline: str) -> None:
        if not self._steps:
            return
        print(headline, flush=True)
        while self._steps:
            what, stop = self._steps.pop()
            try:
                stop()
            except Exception as error:  # keep going: everything else must still be stopped
                print(f"  ! {what}: {error}", flush=True)
            else:
                print(f"  - {what}", flush=True)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((SAMPLES / name).read_text())
    assert isinstance(document, dict)
    return document


def install(kubectl: Kubectl, sim: SimServer) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("create", "namespace", NAMESPACE, check=False)
    token = next(t for u in sim.scenario.users for t in u.tokens if u.userid == "ctoperator@pve")
    pool = load("proxmoxserverpool-lab.yaml")
    pool["spec"]["endpoint"] = sim.url
    # Demo pace: sample every 5 s, act after 3 samples, let a CT move again after 30 s.
    pool["spec"]["balancing"] = {"intervalSeconds": 5, "cooldownSeconds": 30}
    # The credentials Secret the pool names (deploy/samples keeps it out of `kubectl apply -k`), with the
    # simulator's token.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": pool["spec"]["credentialsSecretRef"]["name"]},
        "type": "Opaque",
        "stringData": {"tokenId": f"ctoperator@pve!{token.id}", "tokenSecret": token.secret},
    }
    ca = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": pool["spec"]["tls"]["caConfigMapRef"]["name"]},
        "data": {pool["spec"]["tls"]["caConfigMapRef"]["key"]: Path(sim.ca_path).read_text()},
    }
    objects = [secret, ca, pool, load("containerpolicy-web.yaml")]
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(objects))


def snapshot(kubectl: Kubectl, elapsed: float, note: str | None) -> Snapshot:
    pool = kubectl.json("proxmoxserverpool", POOL, "-n", NAMESPACE)
    policies = kubectl.json("containerpolicies", "-n", NAMESPACE).get("items", [])
    return Snapshot(pool or {"metadata": {"name": POOL}}, policies, elapsed, note)


# ---------------------------------------------------------------------------------------------------------
# Screens: a live view on a terminal, a log otherwise


class LiveScreen:
    """Full-screen frames on a terminal: rich's Live on the alternate screen (plain ANSI without rich)."""

    STYLES = (
        (r"\bSucceeded\b", "bold green"),
        (r"\bFailed\b", "bold red"),
        (r"\bRefused\b", "yellow"),
        (r"\bInProgress\b", "cyan"),
        (r"\u00d7\d+ since \S+", "magenta"),
        (r"\bOFFLINE\b|\bPAUSED\b", "bold red"),
        (r"export KUBECONFIG=\S+", "bold cyan"),
        (r"^ {14}/\S+/kubectl\b", "bold cyan"),
        (r"^(NODE|POLICIES|ACTIONS|  NODE)\b.*|^pve-operator demo.*", "bold"),
        (r"^ready: .*", "bold green"),
    )

    def __init__(self) -> None:
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:  # rich is a dev dependency; the plain fallback needs nothing
            self._console: Any = None
            self._live: Any = None
        else:
            self._console = Console()
            self._live = Live(
                console=self._console,
                screen=True,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )

    def size(self) -> tuple[int, int]:
        size = shutil.get_terminal_size()
        return size.columns, size.lines

    @contextmanager
    def shown(self) -> Iterator[None]:
        if self._live is not None:
            with self._live:
                yield
        else:
            sys.stdout.write("\033[?1049h")  # alternate screen
            try:
                yield
            finally:
                sys.stdout.write("\033[?1049l")
                sys.stdout.flush()

    def show(self, lines: list[str]) -> None:
        if self._live is not None:
            from rich.text import Text

            text = Text("\n".join(lines), no_wrap=True, overflow="crop")
            for pattern, style in self.STYLES:
                text.highlight_regex(pattern, style)
            self._live.update(text, refresh=True)
        else:
            sys.stdout.write("\033[H" + "\033[K\n".join(lines) + "\033[K\033[J")
            sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    time_scale = float(os.environ.get("DEMO_TIME_SCALE", "0.1"))
    use_context = os.environ.get("DEMO_USE_CURRENT_CONTEXT", "") == "1"
    interactive = sys.stdout.isatty()
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")  # a log with an ASCII locale still gets every line
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    cleanup = Cleanup()
    try:
        return run(seconds, time_scale, use_context, interactive, stop, cleanup)
    except Interrupted:
        print("interrupted while starting up", flush=True)
        return 130
    finally:
        headline = "Ctrl-C: stopping and removing what the demo started:" if stop.is_set() else "Cleaning up:"
        cleanup.run(headline)
        if stop.is_set():
            print("Everything the demo started is stopped and removed.", flush=True)


def run(
    seconds: float, time_scale: float, use_context: bool, interactive: bool, stop: threading.Event, cleanup: Cleanup
) -> int:
    def check_stop() -> None:
        if stop.is_set():
            raise Interrupted

    workdir = Path(tempfile.mkdtemp(prefix="pve-demo-"))
    cleanup.add(
        f"removed {workdir} (kubeconfig, control-plane PKI, etcd data and logs, pve_sim TLS files, operator log)",
        lambda: shutil.rmtree(workdir, ignore_errors=True),
    )
    if use_context:
        env = dict(os.environ)
        binary = shutil.which("kubectl") or "kubectl"
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        step(f"Using the current kube context ({kubeconfig})")
    else:
        step("Starting a local Kubernetes control plane (etcd, kube-apiserver)…")
        plane = LocalControlPlane(state_dir=workdir / "controlplane")
        plane.start()

        pids = plane.pids
        cleanup.add(
            f"stopped the control plane at {plane.server}: kube-apiserver (pid {pids.get('kube-apiserver', '?')}) "
            f"and etcd (pid {pids.get('etcd', '?')})",
            plane.stop,
        )
        env = plane.env()
        binary = str(plane.kubectl_path)
        kubeconfig = str(plane.kubeconfig)
        print(f"    ready in {plane.startup_seconds or 0:.1f} s at {plane.server}", flush=True)
    access = Access(kubeconfig=kubeconfig, kubectl=binary, namespace=NAMESPACE)
    for line in access.lines():
        print(f"    {line}", flush=True)
    check_stop()
    kubectl = Kubectl(binary, env, stop)

    step(f"Starting pve_sim (scenario {SCENARIO.name}, time scale {time_scale})…")
    sim = SimServer(SCENARIO, time_scale=time_scale, cert_dir=workdir / "pve-sim-tls").start()
    cleanup.add(f"stopped pve_sim ({sim.url})", sim.stop)
    print(f"    serving {sim.url}", flush=True)
    check_stop()

    step(f"Installing the CRDs and applying the samples in namespace {NAMESPACE}…")
    if use_context:
        cleanup.add(
            f"deleted namespace {NAMESPACE} (in the background)",
            lambda: kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False),
        )
    install(kubectl, sim)
    check_stop()

    log_path = workdir / "operator.log"
    step(f"Starting the operator (log: {log_path})…")
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
                operator.wait(5)

    cleanup.add(f"stopped the operator (pid {operator.pid})", stop_operator)
    return watch(kubectl, access, operator, log_path, seconds, interactive, stop)


def watch(
    kubectl: Kubectl,
    access: Access,
    operator: subprocess.Popen[bytes],
    log_path: Path,
    seconds: float,
    interactive: bool,
    stop: threading.Event,
) -> int:
    started = time.monotonic()
    ready_after: float | None = None
    ready_note: str | None = None
    seen: set[str] = set()
    last_frame: Snapshot | None = None
    log = LineLog()
    screen = LiveScreen() if interactive else None
    if screen is None:
        step("Watching (one line per action; a state line when the counts change)")

    def tick() -> bool:
        """One refresh; False when the demo is over."""
        nonlocal ready_after, ready_note, last_frame
        if operator.poll() is not None:
            return False
        elapsed = time.monotonic() - started
        frame = snapshot(kubectl, elapsed, ready_note)
        ready = all_ready(frame)
        if ready_after is None and ready is not None:
            ready_after = elapsed
            ready_note = f"ready: {ready[0]} of {ready[1]} CTs running {ready_after:.0f} s after the operator started"
            frame = Snapshot(frame.pool, frame.policies, frame.elapsed, ready_note)
            if screen is None:
                print(ready_note, flush=True)
        seen.update(succeeded_kinds(frame))
        last_frame = frame
        if screen is not None:
            width, height = screen.size()
            screen.show(render_frame(access, frame, width=width, height=height - 1))
        else:
            for line in log.update(frame):
                print(line, flush=True)
        return not (seconds and all(k in seen for k in EXPECTED))

    def loop() -> None:
        while not stop.is_set() and (not seconds or time.monotonic() - started < seconds):
            if not tick():
                return
            stop.wait(REFRESH_SECONDS)

    if screen is not None:
        with screen.shown():
            loop()
        if last_frame is not None and (seconds or operator.poll() is not None):
            # The alternate screen is gone: leave the last frame in the terminal's scrollback.
            print("\n".join(render_frame(access, last_frame, width=screen.size()[0])), flush=True)
    else:
        loop()
        for line in log.summary():
            print(line, flush=True)

    if operator.poll() is not None:
        print(log_path.read_text()[-3000:])
        print(f"the operator exited unexpectedly (exit code {operator.returncode})", flush=True)
        return 1
    if not seconds:
        return 0
    missing = [k for k in EXPECTED if k not in seen]
    elapsed = time.monotonic() - started
    if missing:
        print(f"demo FAILED after {elapsed:.0f} s: no successful {', '.join(missing)}")
        print("events:")
        print(kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False)[-6000:])
        print(log_path.read_text()[-4000:], flush=True)
        return 1
    print(f"demo OK in {elapsed:.0f} s: creations, migration, offload and restore all happened")
    if ready_after is not None:
        total = ready_after + (started - PROGRAM_START)
        print(
            f"time to ready: {total:.1f} s from start "
            f"({started - PROGRAM_START:.1f} s control plane, pve_sim and install; "
            f"{ready_after:.1f} s for the operator)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

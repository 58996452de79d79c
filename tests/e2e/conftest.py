"""Shared pieces of the operator end-to-end tests: a lab (sim + pool + operator) per test."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_operator.planning.ownership import MANAGED_TAG
from tests.fixtures.kube import KubeCluster, wait_for
from tests.fixtures.operator import OperatorProcess, apply_objects, connect_pool, policy_manifest

#: Real seconds per simulated second: tasks take 5% of their modelled time, stats lag 0.5 s.
SIM_TIME_SCALE = 0.05
LAB_SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"


def lab_scenario_data() -> dict[str, Any]:
    data = yaml.safe_load(LAB_SCENARIO.read_text())
    assert isinstance(data, dict)
    return data


@dataclass
class Lab:
    kube: KubeCluster
    namespace: str
    sim: Any
    operator: OperatorProcess | None

    # -- Kubernetes side ---------------------------------------------------------------------

    def apply_policy(self, name: str = "web", **kwargs: Any) -> None:
        apply_objects(self.kube, self.namespace, policy_manifest(name, **kwargs))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        result = self.kube.kubectl_json("get", kind, name, "-n", self.namespace)
        assert isinstance(result, dict)
        return result

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self.get(kind, name).get("status") or {})

    def condition(self, kind: str, name: str, condition_type: str) -> dict[str, Any] | None:
        for condition in self.status(kind, name).get("conditions") or []:
            if condition.get("type") == condition_type:
                return dict(condition)
        return None

    def wait_condition(
        self, kind: str, name: str, condition_type: str, status: str, reason: str | None = None, timeout_s: float = 120
    ) -> dict[str, Any]:
        def matches() -> bool:
            found = self.condition(kind, name, condition_type)
            return bool(found and found["status"] == status and (reason is None or found.get("reason") == reason))

        wait_for(matches, timeout_s=timeout_s, what=f"{kind}/{name} {condition_type}={status} ({reason})")
        found = self.condition(kind, name, condition_type)
        assert found is not None
        return found

    def wait_policy(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 180
    ) -> dict[str, Any]:
        wait_for(lambda: predicate(self.status("containerpolicy", name)), timeout_s=timeout_s, what=what)
        return self.status("containerpolicy", name)

    def events(self) -> list[dict[str, Any]]:
        items = self.kube.kubectl_json("get", "events", "-n", self.namespace).get("items", [])
        return list(items)

    # -- Proxmox side (through the real proxmoxer client, as root) ---------------------------

    def cts(self) -> list[dict[str, Any]]:
        return [r for r in self.sim.proxmox().cluster.resources.get(type="vm") if r.get("type") == "lxc"]

    def managed_cts(self) -> list[dict[str, Any]]:
        return [r for r in self.cts() if MANAGED_TAG in str(r.get("tags", "")).split(";")]

    def ct_config(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(self.sim.proxmox().nodes(node).lxc(vmid).config.get())

    def wait_task(self, upid: str) -> None:
        api = self.sim.proxmox()
        node = upid.split(":")[1]
        wait_for(lambda: api.nodes(node).tasks(upid).status.get()["status"] == "stopped", what=f"task {upid}")


def recent_actions(lab: Lab) -> list[dict[str, Any]]:
    """The lab pool's ``status.recentActions``, oldest first."""
    return list(lab.status("proxmoxserverpool", "lab").get("recentActions") or [])


def migrations(lab: Lab, *results: str) -> list[dict[str, Any]]:
    """The lab pool's recorded migrations with one of ``results`` (default: started or succeeded)."""
    wanted = results or ("InProgress", "Succeeded")
    return [a for a in recent_actions(lab) if a["action"] == "Migrate" and a["result"] in wanted]


def sim_state(lab: Lab) -> dict[str, Any]:
    """The simulator's own state (not PVE's lagging statistics): node and CT usage, tasks."""
    state = lab.sim.cluster.state_dump()
    assert isinstance(state, dict)
    return state


def ready_replicas(count: int) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return (
            status.get("readyReplicas") == count and status.get("replicas") == count and ready.get("status") == "True"
        )

    return check


@pytest.fixture
def lab(
    kube: KubeCluster,
    kube_namespace: str,
    installed_crds: tuple[str, ...],
    pve_sim_server: Callable[..., Any],
    pve_operator_process: Callable[..., OperatorProcess],
) -> Iterator[Lab]:
    """The lab's two-node simulator, its pool in a fresh namespace, and a running operator."""
    sim = pve_sim_server(time_scale=SIM_TIME_SCALE)
    connect_pool(kube, kube_namespace, sim)
    operator = pve_operator_process(kube_namespace)
    lab = Lab(kube, kube_namespace, sim, operator)
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    yield lab


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)

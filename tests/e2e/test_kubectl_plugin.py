"""``kubectl pve``: the installed ``kubectl-pve`` script, run directly and as a plugin through the real kubectl.

Against the local control plane, pve_sim and the running operator (the ``lab`` fixture). Each command is
checked on its output and on its effect where it has one: ``drain``/``uncordon`` on the pool's spec,
``pin``/``unpin`` on the CT's tags in Proxmox VE, and a foreign CT (3150 in the lab's scenario, inside the
policy's VMID range but without the operator's marks) refused without being touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_operator.planning.balancing import PINNED_TAG
from tests.e2e.conftest import Lab, ready_replicas
from tests.fixtures.kube import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

#: The console script ``pip install`` made from [project.scripts] (``make install`` reinstalls on change).
SCRIPT = Path(sys.executable).parent / "kubectl-pve"
FOREIGN_VMID = 3150


@pytest.fixture
def pve(lab: Lab) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``pve("status", "-n", ns)`` runs ``kubectl-pve``; ``pve(..., via_kubectl=True)`` runs ``kubectl pve``;
    ``pve(..., plain_kubectl=True)`` runs ``kubectl ...`` with the same PATH."""
    if not SCRIPT.is_file():
        pytest.fail(f"{SCRIPT} is missing: run `make install` (or pip install -e . --no-deps)", pytrace=False)
    # kubectl finds plugins on PATH: the script's directory first, and nothing else of the venv leaks in.
    env = {**lab.kube.env, "PATH": os.pathsep.join([str(SCRIPT.parent), lab.kube.env.get("PATH", "")])}

    def run(
        *args: str,
        via_kubectl: bool = False,
        plain_kubectl: bool = False,
        env_update: dict[str, str | None] | None = None,
    ) -> Any:
        kubectl = str(lab.kube.kubectl_path)
        command = (
            [kubectl, *args] if plain_kubectl else [kubectl, "pve", *args] if via_kubectl else [str(SCRIPT), *args]
        )
        run_env = dict(env)
        for key, value in (env_update or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        return subprocess.run(command, capture_output=True, text=True, env=run_env, timeout=120, check=False)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"
    )
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_plugin_is_found_by_kubectl_and_shows_status_and_plan(lab: Lab, pve: Any, tmp_path: Path) -> None:
    ns = lab.namespace
    listed = pve("plugin", "list", plain_kubectl=True)
    assert str(SCRIPT) in listed.stdout, listed

    lab.apply_policy("web", replicas=2)
    lab.wait_policy("web", ready_replicas(2), "2 ready CTs")
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    # The pool's status counts the CTs at its next sample (every balancing.intervalSeconds).
    wait_for(
        lambda: (
            sum(n.get("managedContainers", 0) for n in lab.status("proxmoxserverpool", "lab").get("nodes") or ()) == 2
        ),
        timeout_s=60,
        what="the pool's status to count 2 managed CTs",
    )

    text = ok(pve("status", "-n", ns, via_kubectl=True))
    assert "POOL lab  Ready=True (Connected)" in text, text
    for expected in ("srv-px1", "srv-px2", "In flight", "Last actions", "memory thresholds", "web"):
        assert expected in text, (expected, text)

    document = json.loads(ok(pve("status", "-n", ns, "-o", "json")))
    (pool,) = document["pools"]
    assert pool["name"] == "lab" and pool["ready"]["status"] == "True" and pool["ready"]["reason"] == "Connected"
    assert [n["name"] for n in pool["nodes"]] == ["srv-px1", "srv-px2"]
    assert all(n["online"] and n["load"] != "not sampled yet" for n in pool["nodes"]), pool["nodes"]
    assert all(n["memoryPercent"] is not None for n in pool["nodes"])
    assert sum(n["managedContainers"] for n in pool["nodes"]) == 2
    assert pool["inFlight"] == []
    (policy,) = document["policies"]
    assert policy["name"] == "web" and policy["pool"] == "lab"
    assert (policy["replicas"], policy["readyReplicas"], policy["offloadedReplicas"], policy["migratingReplicas"]) == (
        2,
        2,
        0,
        0,
    )
    assert {"type": "Ready", "status": "True"}.items() <= next(
        c for c in policy["conditions"] if c["type"] == "Ready"
    ).items()
    as_yaml = yaml.safe_load(ok(pve("status", "-n", ns, "-o", "yaml", via_kubectl=True)))
    assert as_yaml["pools"][0]["name"] == "lab"

    # plan: python -m pve_operator plan's own output, and the same plan as data.
    text = ok(pve("plan", "--pool", "lab", "-n", ns, via_kubectl=True))
    assert text.startswith("Pool lab: memory thresholds"), text
    assert "srv-px1" in text and ("Plan: nothing to do." in text or "why:" in text)
    plan = json.loads(ok(pve("plan", "--pool", "lab", "-n", ns, "-o", "json")))
    assert plan["pool"] == "lab" and plan["metric"] == "memory" and plan["managedContainers"] == 2
    assert [n["name"] for n in plan["nodes"]] == ["srv-px1", "srv-px2"]
    assert isinstance(plan["actions"], list) and isinstance(plan["refusals"], list)
    assert yaml.safe_load(ok(pve("plan", "--pool", "lab", "-n", ns, "-o", "yaml")))["pool"] == "lab"

    # --kubeconfig and --context: a kubeconfig whose current context points nowhere; the namespace comes
    # from the chosen context. KUBECONFIG is unset so only the flags can find the cluster.
    config = yaml.safe_load(lab.kube.kubeconfig.read_text())
    for cluster in config["clusters"]:
        entry = cluster["cluster"]
        if entry.get("certificate-authority"):
            entry["certificate-authority"] = str(lab.kube.kubeconfig.parent / entry["certificate-authority"])
    for user in config["users"]:
        for key in ("client-certificate", "client-key"):
            if user["user"].get(key):
                user["user"][key] = str(lab.kube.kubeconfig.parent / user["user"][key])
    real = config["current-context"]
    for context in config["contexts"]:
        if context["name"] == real:
            context["context"]["namespace"] = ns
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}})
    config["contexts"].append(
        {"name": "nowhere", "context": {"cluster": "nowhere", "user": config["users"][0]["name"]}}
    )
    config["current-context"] = "nowhere"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    unset: dict[str, str | None] = {"KUBECONFIG": None}
    document = json.loads(
        ok(pve("status", "--kubeconfig", str(path), "--context", real, "-o", "json", env_update=unset))
    )
    assert document["namespace"] == ns and document["pools"][0]["name"] == "lab"
    failed = pve("status", "--kubeconfig", str(path), "--context", "nonesuch", env_update=unset)
    assert "nonesuch" in one_line_error(failed)

    # usage errors exit 2, other errors 1, each on one line
    assert pve("drain", "--pool", "lab", "-n", ns).returncode == 2
    assert pve("pin", "not-a-vmid", "-n", ns).returncode == 2
    assert "ProxmoxServerPool" in one_line_error(pve("plan", "--pool", "nonesuch", "-n", ns, via_kubectl=True))


def _node_flags(lab: Lab) -> dict[str, bool]:
    spec = lab.get("proxmoxserverpool", "lab")["spec"]
    return {n["name"]: bool(n.get("maintenance", False)) for n in spec["nodes"]}


def test_drain_and_uncordon_set_and_clear_maintenance_in_the_pool_spec(lab: Lab, pve: Any) -> None:
    ns = lab.namespace
    before = lab.get("proxmoxserverpool", "lab")["spec"]["nodes"]
    assert _node_flags(lab) == {"srv-px1": False, "srv-px2": False}

    text = ok(pve("drain", "srv-px2", "--pool", "lab", "-n", ns, via_kubectl=True))
    assert "srv-px2" in text and "drained" in text, text
    assert _node_flags(lab) == {"srv-px1": False, "srv-px2": True}
    after = lab.get("proxmoxserverpool", "lab")["spec"]["nodes"]
    assert [{k: v for k, v in n.items() if k != "maintenance"} for n in after] == [
        {k: v for k, v in n.items() if k != "maintenance"} for n in before
    ], "drain changed more than the maintenance flag"

    again = json.loads(ok(pve("drain", "srv-px2", "--pool", "lab", "-n", ns, "-o", "json")))
    assert again == {"pool": "lab", "namespace": ns, "node": "srv-px2", "maintenance": True, "changed": False}
    # The operator acts on it: with nothing in the pool yet, its status still shows both nodes.
    status = json.loads(ok(pve("status", "--pool", "lab", "-n", ns, "-o", "json")))
    assert {n["name"]: n["maintenance"] for n in status["pools"][0]["nodes"]} == {"srv-px1": False, "srv-px2": True}

    text = ok(pve("uncordon", "srv-px2", "--pool", "lab", "-n", ns))
    assert "uncordoned" in text, text
    assert _node_flags(lab) == {"srv-px1": False, "srv-px2": False}

    error = one_line_error(pve("drain", "srv-px9", "--pool", "lab", "-n", ns, via_kubectl=True))
    assert "node srv-px9 is not in pool" in error and "srv-px1, srv-px2" in error, error
    error = one_line_error(pve("uncordon", "srv-px1", "--pool", "nonesuch", "-n", ns))
    assert f"ProxmoxServerPool {ns}/nonesuch not found" in error, error
    assert _node_flags(lab) == {"srv-px1": False, "srv-px2": False}


def _tags(lab: Lab, vmid: int) -> set[str]:
    (ct,) = [c for c in lab.cts() if int(c["vmid"]) == vmid]
    return set(str(lab.ct_config(str(ct["node"]), vmid).get("tags") or "").split(";")) - {""}


def test_pin_and_unpin_tag_an_operator_ct_and_a_foreign_ct_is_refused(lab: Lab, pve: Any) -> None:
    ns = lab.namespace
    lab.apply_policy("web", replicas=1)
    lab.wait_policy("web", ready_replicas(1), "1 ready CT")
    (ct,) = lab.managed_cts()
    vmid = int(ct["vmid"])
    owned_tags = _tags(lab, vmid)
    assert PINNED_TAG not in owned_tags

    text = ok(pve("pin", str(vmid), "-n", ns, via_kubectl=True))
    assert f"CT {vmid}" in text and "pinned" in text and "policy web" in text, text
    assert _tags(lab, vmid) == owned_tags | {PINNED_TAG}

    again = json.loads(ok(pve("pin", str(vmid), "-n", ns, "--pool", "lab", "-o", "json")))
    assert again["changed"] is False and again["pinned"] is True and again["policy"] == "web"
    assert _tags(lab, vmid) == owned_tags | {PINNED_TAG}

    # The operator keeps its own tags on a pinned CT, and the policy stays ready.
    lab.wait_policy("web", ready_replicas(1), "still 1 ready CT")
    assert _tags(lab, vmid) == owned_tags | {PINNED_TAG}

    unpinned = json.loads(ok(pve("unpin", str(vmid), "-n", ns, "-o", "json", via_kubectl=True)))
    assert unpinned["changed"] is True and unpinned["pinned"] is False
    assert _tags(lab, vmid) == owned_tags

    # 3150 lies in web's VMID range but carries none of the operator's marks: refused, untouched.
    foreign_before = _tags(lab, FOREIGN_VMID)
    for via_kubectl in (False, True):
        error = one_line_error(pve("pin", str(FOREIGN_VMID), "-n", ns, via_kubectl=via_kubectl))
        assert f"refusing: CT {FOREIGN_VMID} is not the operator's" in error, error
        assert "web:" in error and "no ownership record" in error, error
    assert _tags(lab, FOREIGN_VMID) == foreign_before == {"legacy"}
    error = one_line_error(pve("unpin", str(FOREIGN_VMID), "-n", ns))
    assert "is not the operator's" in error, error

    error = one_line_error(pve("pin", "3999", "-n", ns))
    assert "CT 3999 does not exist" in error, error

"""template.clone against pve_sim: CTs are linked clones of a template CT, made on its node (or on any node
when its volumes are on shared storage), with the policy's settings and the ownership marks applied to the clone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pve_operator.execution.policy_input import blueprint_from
from pve_operator.handlers.containerpolicy import _clone_source
from pve_operator.planning.ownership import MANAGED_TAG, parse_record
from pve_operator.runtime import ConfigurationError
from pve_sim.scenario import parse_scenario
from tests.integration.test_executor import KEY, creates, executor
from tests.unit.test_ct_settings import policy

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE_CT = 9000


def clone_lab(*, shared: bool = False) -> Any:
    """The two-node lab with template CT 9000 (golden) on srv-px1: on local-lvm, or (``shared``) on a Ceph RBD
    pool both nodes reach."""
    data = yaml.safe_load(LAB.read_text())
    if shared:
        data["storages"].append(
            {"name": "ceph-ct", "type": "rbd", "content": ["rootdir", "images"], "shared": True, "capacityGiB": 800}
        )
    base = copy.deepcopy(data["containers"][0])
    base.pop("usage", None)
    data["containers"] = [
        {
            **{k: v for k, v in base.items() if k in ("memoryMiB", "cores", "swapMiB", "unprivileged")},
            "vmid": TEMPLATE_CT,
            "node": "srv-px1",
            "hostname": "golden",
            "status": "stopped",
            "template": True,
            "rootfs": {"storage": "ceph-ct" if shared else "local-lvm", "sizeGiB": 4},
        }
    ]
    for role in data["roles"]:
        if role["id"] == "CTOperator":
            role["privileges"].append("VM.Clone")  # docs/proxmox-setup.md: needed for template.clone
    return parse_scenario(data, "<clone-lab>")


def test_cts_are_linked_clones_of_the_template_with_the_policys_settings_and_marks(pve_sim_server: Any) -> None:
    sim = pve_sim_server(clone_lab(), time_scale=0.0)
    run = executor(sim)
    spec = policy(
        ostemplate=None,
        clone={"fromName": "golden"},
        memoryMiB=1024,
        cores=2,
        tags=["web"],
        nameservers=["192.0.2.53"],
        networks=[{"name": "eth0", "bridge": "vmbr0", "stableMac": True}],
    )
    source = _clone_source(spec, run._client.snapshot(0.0), run._client)
    assert source is not None and (source.vmid, source.node, source.full) == (TEMPLATE_CT, "srv-px1", False)
    outcomes = run.apply(creates(2), blueprint_from(spec, clone=source))
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    for vmid in (3100, 3101):
        config = sim.proxmox().nodes("srv-px1").lxc(vmid).config.get()
        assert config["rootfs"].startswith(f"local-lvm:vm-{vmid}-disk-0,size=4G"), "the template's root volume"
        assert int(config["memory"]) == 1024 and int(config["cores"]) == 2
        assert config["nameserver"] == "192.0.2.53" and config["hostname"] == f"ct-web-0{vmid - 3100}"
        assert {MANAGED_TAG, "web"} <= set(config["tags"].split(";"))
        record = parse_record(config["description"])
        assert record is not None and KEY.verifies(vmid, record)
        assert "hwaddr=02:" in config["net0"]
        assert sim.proxmox().nodes("srv-px1").lxc(vmid).status.current.get()["status"] == "running"
    tasks = sim.proxmox().nodes("srv-px1").tasks.get(limit=50)
    assert "vzcreate" not in {t["type"] for t in tasks}
    clones = [t for t in tasks if t["type"] == "vzclone"]
    assert len(clones) == 2
    for task in clones:
        log = "\n".join(line["t"] for line in sim.proxmox().nodes("srv-px1").tasks(task["upid"]).log.get())
        assert f"create linked clone of mount point rootfs (local-lvm:base-{TEMPLATE_CT}-disk-0)" in log, log


def test_a_missing_or_non_template_source_creates_nothing_and_says_why(pve_sim_server: Any) -> None:
    sim = pve_sim_server(clone_lab(), time_scale=0.0)
    snapshot = executor(sim)._client.snapshot(0.0)
    for clone, expected in (
        ({"fromName": "silver"}, "clone.fromName silver: no template CT with that host name"),
        ({"fromVmid": 3150}, "clone.fromVmid 3150: no CT with that VMID"),
    ):
        try:
            _clone_source(policy(ostemplate=None, clone=clone), snapshot, executor(sim)._client)
        except ConfigurationError as exc:
            assert exc.reason.value == "TemplateNotFound" and expected in exc.message
        else:
            raise AssertionError(f"{clone} resolved")


def test_clones_of_one_template_made_in_parallel_all_succeed(pve_sim_server: Any) -> None:
    """PVE locks the template (`disk`) for the whole vzclone task: a second clone started meanwhile fails with
    'CT is locked (disk)' (found by bench/clone_speed.py); the executor makes one template's clones in turn."""
    sim = pve_sim_server(clone_lab(), time_scale=0.05)
    run = executor(sim, workers=3)
    spec = policy(ostemplate=None, clone={"fromVmid": TEMPLATE_CT})
    source = _clone_source(spec, run._client.snapshot(0.0), run._client)
    outcomes = run.apply(creates(3), blueprint_from(spec, clone=source))
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]


def test_a_template_on_shared_storage_is_cloned_onto_other_nodes_and_a_local_one_is_not(pve_sim_server: Any) -> None:
    from dataclasses import replace

    from pve_operator.planning.actions import CreateContainer

    sim = pve_sim_server(clone_lab(shared=True), time_scale=0.0)
    run = executor(sim)
    spec = policy(ostemplate=None, clone={"fromName": "golden"})
    source = _clone_source(spec, run._client.snapshot(0.0), run._client)
    assert source is not None and source.shared, "rootfs on ceph-ct (shared): any node"
    on_px2 = [replace(a, node="srv-px2") for a in creates(2) if isinstance(a, CreateContainer)]
    outcomes = run.apply(on_px2, blueprint_from(spec, clone=source))
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    for vmid in (3100, 3101):
        config = sim.proxmox().nodes("srv-px2").lxc(vmid).config.get()
        assert config["rootfs"].startswith(f"ceph-ct:base-{TEMPLATE_CT}-disk-0/vm-{vmid}-disk-0"), config["rootfs"]
        assert sim.proxmox().nodes("srv-px2").lxc(vmid).status.current.get()["status"] == "running"

    local = pve_sim_server(clone_lab(), time_scale=0.0)
    local_run = executor(local)
    local_source = _clone_source(spec, local_run._client.snapshot(0.0), local_run._client)
    assert local_source is not None and not local_source.shared, "rootfs on local-lvm: only the template's node"
    (refused,) = local_run.apply(on_px2[:1], blueprint_from(spec, clone=local_source))
    assert (
        not refused.succeeded and "a clone of a CT on local storage is made on its template's node" in refused.message
    )
    assert not [c for c in local.proxmox().cluster.resources.get(type="vm") if c["vmid"] == 3100]

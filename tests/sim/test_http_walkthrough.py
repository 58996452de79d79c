"""Acceptance: a CT's whole life through proxmoxer, as ``examples/proxmoxer_walkthrough.py`` does it.

Create, start, migrate (restart mode), stop and delete; every UPID decoded with proxmoxer's
``Tasks.decode_upid`` and waited on with ``Tasks.blocking_status``; node memory
(``/nodes/{node}/status``) follows the CT from node to node.
"""

from __future__ import annotations

import pytest
from examples.proxmoxer_walkthrough import run_walkthrough

from tests.fixtures.sim import SimServerFactory

VMID = 3901
MIB = 1024 * 1024


@pytest.mark.parametrize(("user", "token"), [("root@pam", None), ("ctoperator@pve", "operator")])
def test_ct_lifecycle_through_proxmoxer(pve_sim_server: SimServerFactory, user: str, token: str | None) -> None:
    sim = pve_sim_server()
    prox = sim.proxmox(user, token=token)
    lines: list[str] = []

    report = run_walkthrough(prox, vmid=VMID, memory_mib=1024, poll_interval=0.01, say=lines.append)

    upid_user = f"{user}!{token}" if token else user
    expected = [
        ("create", "srv-px1", "vzcreate"),
        ("start", "srv-px1", "vzstart"),
        ("migrate", "srv-px1", "vzmigrate"),
        ("stop", "srv-px2", "vzstop"),
        ("delete", "srv-px2", "vzdestroy"),
    ]
    assert [(s.name, s.decoded["node"], s.decoded["type"]) for s in report.steps] == expected
    for step in report.steps:
        assert step.upid.startswith(f"UPID:{step.decoded['node']}:") and step.upid.endswith(f":{upid_user}:")
        assert step.decoded["id"] == str(VMID)
        assert step.decoded["user"] == user  # decode_upid strips the token part
        assert step.decoded["comment"] == ""
        assert step.status["status"] == "stopped"
        assert step.status["exitstatus"] == "OK"
        assert step.status["upid"] == step.upid
    starts = [s.decoded["starttime"] for s in report.steps]
    assert starts == sorted(starts)

    base = report.reading("baseline").used_bytes
    created = report.reading("created")
    assert created.used_bytes == base  # a stopped CT uses no node memory
    started = report.reading("started")
    ct_mem = started.ct_mem_bytes
    assert ct_mem is not None and 0.5 * 1024 * MIB <= ct_mem <= 1024 * MIB  # the lab's ct-* rule: 55 %
    assert started.used_bytes == {"srv-px1": base["srv-px1"] + ct_mem, "srv-px2": base["srv-px2"]}
    migrated = report.reading("migrated")
    assert migrated.ct_mem_bytes is not None
    assert migrated.used_bytes == {"srv-px1": base["srv-px1"], "srv-px2": base["srv-px2"] + migrated.ct_mem_bytes}
    assert report.reading("stopped").used_bytes == base
    assert report.reading("deleted").used_bytes == base

    assert report.gone_message == f"Configuration file 'nodes/srv-px2/lxc/{VMID}.conf' does not exist"
    assert any("decoded: node=srv-px1 type=vzmigrate" in line for line in lines)

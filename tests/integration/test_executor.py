"""The executor against pve_sim: ownership re-proved before destroying, bounded parallelism, release."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pve_operator.execution.executor import PolicyExecutor, PolicyIdentity
from pve_operator.planning.actions import CreateContainer, DestroyContainer, StartContainer
from pve_operator.planning.ownership import MANAGED_TAG, OFFLOADED_TAG, OwnershipKey, parse_record
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.params import ContainerBlueprint, NetworkInterface

KEY = OwnershipKey(b"integration-test-ownership-key!!")
IDENTITY = PolicyIdentity("apps", "web", "uid-web-0001", range(3100, 3200), KEY)
BLUEPRINT = ContainerBlueprint(
    ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    memory_mib=512,
    swap_mib=0,
    cores=1,
    rootfs_storage="local-lvm",
    rootfs_gib=4,
    networks=(NetworkInterface(),),
    tags=frozenset({"web"}),
)


def executor(sim: Any, *, workers: int = 4, identity: PolicyIdentity = IDENTITY) -> PolicyExecutor:
    client = PveClient(
        sim.url,
        PveCredentials(token_id="ctoperator@pve!operator", token_secret=sim.token_secret("ctoperator@pve", "operator")),
        TlsSettings(ca_pem=Path(sim.ca_path).read_text()),
    )
    return PolicyExecutor(
        client,
        identity,
        limiter=threading.BoundedSemaphore(workers),
        max_workers=workers,
        task_timeout_seconds=60,
        now_rfc3339=lambda: "2026-11-23T12:00:00Z",
    )


def creates(count: int) -> list[CreateContainer]:
    return [
        CreateContainer(vmid=3100 + i, node="srv-px1", index=i, hostname=f"ct-web-{i:02d}", reason="test")
        for i in range(count)
    ]


def test_created_cts_carry_the_marks_and_run(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    outcomes = executor(sim).apply(creates(2), BLUEPRINT)
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    config = sim.proxmox().nodes("srv-px1").lxc(3101).config.get()
    assert {MANAGED_TAG, "web"} <= set(config["tags"].split(";"))
    assert config["unprivileged"] == 1 and config["hostname"] == "ct-web-01"
    record = parse_record(config["description"])
    assert record is not None and record.index == 1 and record.policy_uid == IDENTITY.uid
    assert KEY.verifies(3101, record), "the record is signed for its own VMID"
    assert sim.proxmox().nodes("srv-px1").lxc(3101).status.current.get()["status"] == "running"


def test_a_host_name_proxmox_accepts_is_created_as_written(pve_sim_server: Any) -> None:
    """The lab named its CTs ``ct-tpgei-virt-C1-ctYY``: upper case and FQDNs are dns-names to PVE, and
    the policy's pattern renders them; created and started as written."""
    from pve_operator.api.v1alpha1 import render_hostname

    sim = pve_sim_server(time_scale=0.0)
    names = [render_hostname("ct-tpgei-virt-C1-ct{index:02d}", 4), render_hostname("web-{index}.lab.example", 5)]
    actions = [
        CreateContainer(vmid=3104 + i, node="srv-px1", index=4 + i, hostname=name, reason="test")
        for i, name in enumerate(names)
    ]
    outcomes = executor(sim).apply(actions, BLUEPRINT)
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    for action in actions:
        assert sim.proxmox().nodes("srv-px1").lxc(action.vmid).config.get()["hostname"] == action.hostname
    assert names == ["ct-tpgei-virt-C1-ct04", "web-5.lab.example"]


def test_destroy_refuses_a_ct_that_is_not_provably_ours(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    # 3150 (legacy-db) is inside the range but has none of our marks.
    (outcome,) = executor(sim).apply(
        [DestroyContainer(vmid=3150, node="srv-px2", running=True, reason="test")], BLUEPRINT
    )
    assert not outcome.succeeded and "not provably owned" in outcome.message
    assert sim.proxmox().nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


def test_destroy_refuses_a_ct_of_another_policy_even_with_copied_tags(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    executor(sim).apply(creates(1), BLUEPRINT)
    other = PolicyIdentity("apps", "db", "uid-db-0002", range(3100, 3200), KEY)
    (outcome,) = executor(sim, identity=other).apply(
        [DestroyContainer(vmid=3100, node="srv-px1", running=True, reason="test")], BLUEPRINT
    )
    assert not outcome.succeeded
    assert sim.proxmox().nodes("srv-px1").lxc(3100).status.current.get()["status"] == "running"


def test_destroy_refuses_a_ct_whose_marks_were_copied_from_one_of_ours(pve_sim_server: Any) -> None:
    """Issue 10 §4: tags and description of CT 3100 copied onto a CT someone else made in the range."""
    sim = pve_sim_server(time_scale=0.0)
    executor(sim).apply(creates(1), BLUEPRINT)
    api = sim.proxmox()
    original = api.nodes("srv-px1").lxc(3100).config.get()
    api.nodes("srv-px1").lxc.post(
        vmid=3107,
        ostemplate=BLUEPRINT.ostemplate,
        hostname="someone-elses",
        rootfs="local-lvm:4",
        tags=original["tags"],
        description=original["description"],
        start=1,
    )
    assert parse_record(api.nodes("srv-px1").lxc(3107).config.get()["description"]) == parse_record(
        original["description"]
    )
    (outcome,) = executor(sim).apply(
        [DestroyContainer(vmid=3107, node="srv-px1", running=True, reason="test")], BLUEPRINT
    )
    assert not outcome.succeeded and "not provably owned" in outcome.message
    assert api.nodes("srv-px1").lxc(3107).status.current.get()["status"] == "running"


def test_destroy_stops_then_destroys_and_tolerates_a_ct_already_gone(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    run.apply(creates(1), BLUEPRINT)
    action = DestroyContainer(vmid=3100, node="srv-px1", running=True, reason="scale down")
    (first,) = run.apply([action], BLUEPRINT)
    assert first.succeeded and "stopped and destroyed" in first.message
    (again,) = run.apply([action], BLUEPRINT)
    assert again.succeeded and "already gone" in again.message


def test_parallel_creations_never_exceed_the_bound_but_do_overlap(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.05)  # create = 0.3 s real
    outcomes = executor(sim, workers=3).apply(creates(9), BLUEPRINT)
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    tasks = sim.proxmox().nodes("srv-px1").tasks.get(typefilter="vzcreate", limit=100)
    intervals = sorted((int(t["starttime"]), 1) for t in tasks) + sorted((int(t["endtime"]), -1) for t in tasks)
    # Sweep in simulated seconds: ends before starts at the same instant.
    running = peak = 0
    for _, delta in sorted(intervals, key=lambda x: (x[0], x[1])):
        running += delta
        peak = max(peak, running)
    assert len(tasks) == 9
    assert 1 < peak <= 3


def test_release_removes_only_our_marks_and_leaves_the_ct_running(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    run.apply(creates(1), BLUEPRINT)
    run.release(3100, "srv-px1")
    config = sim.proxmox().nodes("srv-px1").lxc(3100).config.get()
    assert config.get("tags") == "web"
    assert parse_record(config.get("description")) is None
    assert sim.proxmox().nodes("srv-px1").lxc(3100).status.current.get()["status"] == "running"


def test_a_repair_start_planned_from_an_older_snapshot_is_skipped_when_no_longer_needed(pve_sim_server: Any) -> None:
    """A policy's snapshot showed the CT stopped; since then the pool's balancing restored it (it runs)
    or offloaded it (stopped and tagged). Re-read at the moment of acting, neither gets a start."""
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    run.apply(creates(2), BLUEPRINT)
    api = sim.proxmox()

    def starts_of(vmid: int) -> int:
        tasks = api.nodes("srv-px1").tasks.get(vmid=vmid, typefilter="vzstart", limit=500)
        return len(tasks)

    before = starts_of(3100)
    (restored,) = run.apply([StartContainer(3100, "srv-px1", "stopped outside the operator")], BLUEPRINT)
    assert restored.succeeded and restored.skipped and "running again" in restored.message
    assert starts_of(3100) == before, "no start task for a CT that runs"

    api.nodes("srv-px1").lxc(3101).status.stop.post()
    tags = api.nodes("srv-px1").lxc(3101).config.get()["tags"]
    api.nodes("srv-px1").lxc(3101).config.put(tags=f"{tags};{OFFLOADED_TAG}")
    (offloaded,) = run.apply([StartContainer(3101, "srv-px1", "stopped outside the operator")], BLUEPRINT)
    assert offloaded.skipped and "offloaded" in offloaded.message
    assert api.nodes("srv-px1").lxc(3101).status.current.get()["status"] == "stopped"

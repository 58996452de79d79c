"""keepOnRecreate against pve_sim, through the real proxmoxer client: the operator's own discovery, planner and
executor run cycle after cycle while a template change rolls over CTs whose ``mp1`` is kept. Each kept volume
ends on a current CT with what it held (the original 8 GiB volume, where a new one would have the new spec's 16
GiB), the volumes that are not kept are new, no volume is left behind, and a failing handover leaves the old
CT running with its volume."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pve_operator.execution.discovery import discover_owned
from pve_operator.planning.actions import CreateContainer, HandOverVolumes
from pve_operator.planning.ownership import parse_record
from pve_operator.planning.reconcile import PolicyIntent, plan_reconcile
from pve_operator.pve.params import MountPoint
from tests.integration.test_executor import BLUEPRINT, IDENTITY, KEY, executor

CACHE = MountPoint("local-lvm", 4, "/srv/cache")
DATA = MountPoint("local-lvm", 8, "/srv/data", backup=True, keep_on_recreate=True)
OLD = replace(BLUEPRINT, mount_points=(CACHE, DATA), template_hash="old")
#: The new template: another OS image and a bigger data volume (a new volume would be 16 GiB).
NEW = replace(
    OLD,
    ostemplate="local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst",
    mount_points=(CACHE, replace(DATA, size_gib=16)),
    template_hash="new",
)
INTENT = PolicyIntent(
    policy_uid=IDENTITY.uid,
    vmid_range=IDENTITY.vmid_range,
    memory_mib=OLD.memory_mib,
    cores=OLD.cores,
    rootfs_gib=OLD.rootfs_gib,
    hostname_for=lambda i: f"ct-web-{i:02d}",
    node_weights={"srv-px1": 1, "srv-px2": 1},
    replicas=2,
    template_hash="new",
    rollout_max_unavailable=1,
    rollout_max_surge=1,
    kept_volumes=("mp1",),
)


def _volumes(sim: Any) -> dict[str, int]:
    """Every volume on local-lvm of both nodes -> its size in bytes."""
    found = {}
    for node in ("srv-px1", "srv-px2"):
        for item in sim.proxmox().nodes(node).storage("local-lvm").content.get():
            found[item["volid"]] = int(item["size"])
    return found


def _config(sim: Any, node: str, vmid: int) -> dict[str, Any]:
    return dict(sim.proxmox().nodes(node).lxc(vmid).config.get())


def _template(sim: Any, node: str, vmid: int) -> str:
    record = parse_record(_config(sim, node, vmid)["description"])
    return KEY.template_of(vmid, record) if record is not None else ""


def _cycle(run: Any, intent: PolicyIntent, blueprint: Any) -> list[Any]:
    """One policy cycle as the handler runs it: snapshot, ownership from each CT's own config, plan, act."""
    client = run._client
    snapshot = client.snapshot(time.time())
    owned = discover_owned(client, snapshot, IDENTITY.uid, IDENTITY.vmid_range, {}, key=KEY)
    plan = plan_reconcile(intent, snapshot, owned)
    return run.apply(plan.actions, blueprint)


def _sim(pve_sim_server: Any) -> Any:
    """The lab with the new template on its storage and no CTs of its own but the foreign 3150."""
    import yaml

    from pve_sim.scenario import parse_scenario
    from tests.fixtures.sim import LAB_SCENARIO

    data = yaml.safe_load(LAB_SCENARIO.read_text())
    data["templates"].append({"volid": NEW.ostemplate, "ostype": "debian", "sizeMiB": 130})
    return pve_sim_server(parse_scenario(data, "<kept-volumes>"), time_scale=0.02)


def _start_fleet(sim: Any) -> tuple[Any, dict[int, str]]:
    run = executor(sim)
    made = [
        CreateContainer(vmid=3100, node="srv-px1", index=0, hostname="ct-web-00", reason="test"),
        CreateContainer(vmid=3101, node="srv-px2", index=1, hostname="ct-web-01", reason="test"),
    ]
    outcomes = run.apply(made, OLD)
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    kept = {3100: _config(sim, "srv-px1", 3100)["mp1"], 3101: _config(sim, "srv-px2", 3101)["mp1"]}
    return run, {vmid: value.split(",", 1)[0] for vmid, value in kept.items()}


def test_a_template_rollout_hands_each_kept_volume_to_a_current_ct_and_leaves_no_volume_behind(
    pve_sim_server: Any,
) -> None:
    sim = _sim(pve_sim_server)
    run, kept = _start_fleet(sim)
    sizes = _volumes(sim)
    assert all(sizes[volid] == 8 << 30 for volid in kept.values())
    handed_over = []
    for _ in range(12):
        outcomes = _cycle(run, INTENT, NEW)
        assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
        handed_over += [o for o in outcomes if isinstance(o.action, HandOverVolumes)]
        resources = [r for r in sim.proxmox().cluster.resources.get(type="vm") if r["vmid"] in range(3100, 3200)]
        running = [r for r in resources if r["status"] == "running" and r["vmid"] not in (3150,)]
        assert len(running) >= 1, "never below replicas - maxUnavailable running"
        ours = {r["vmid"]: r["node"] for r in resources if "pve-operator" in str(r.get("tags", ""))}
        current = len(ours) == 2 and all(_template(sim, node, vmid) == "new" for vmid, node in ours.items())
        if current and len(running) >= 2:
            break
    assert len(handed_over) == 2, [o.message for o in handed_over]
    assert all(o.action.node == ("srv-px1" if o.action.source_vmid == 3100 else "srv-px2") for o in handed_over)
    assert len(ours) == 2 and all(_template(sim, node, vmid) == "new" for vmid, node in ours.items()), ours
    # Each current CT holds one of the original data volumes (8 GiB: the old spec's), renamed for it, with the
    # policy's mount options; its cache volume is new.
    volumes = _volumes(sim)
    referenced = set()
    for vmid, node in ours.items():
        config = _config(sim, node, vmid)
        volid = config["mp1"].split(",", 1)[0]
        assert volid.startswith(f"local-lvm:vm-{vmid}-disk-"), config["mp1"]
        assert "mp=/srv/data" in config["mp1"] and "backup=1" in config["mp1"] and "size=8G" in config["mp1"]
        assert volumes[volid] == 8 << 30, "the handed-over volume, not a new 16 GiB one"
        assert volumes[config["mp0"].split(",", 1)[0]] == 4 << 30
        referenced |= {config[key].split(",", 1)[0] for key in ("rootfs", "mp0", "mp1")}
    # Nothing of the old CTs is left: their rootfs and cache volumes went with them, their data volumes moved.
    foreign = {v for v in volumes if "-3150-" in v}
    assert set(volumes) - foreign == referenced, sorted(set(volumes) - foreign - referenced)


def test_a_failing_move_starts_the_old_ct_again_and_destroys_nothing(pve_sim_server: Any) -> None:
    sim = _sim(pve_sim_server)
    run, kept = _start_fleet(sim)
    created = _cycle(run, INTENT, NEW)
    (made,) = [o.action for o in created if isinstance(o.action, CreateContainer)]
    assert made.volumes_from == 3100 and made.node == "srv-px1"
    assert sim.proxmox().nodes("srv-px1").lxc(made.vmid).status.current.get()["status"] == "stopped"
    assert "mp1" not in _config(sim, "srv-px1", made.vmid), "created without the kept mount point"
    sim.admin.fail_tasks("move_volume", "rename failed: simulated storage error")
    outcomes = _cycle(run, INTENT, NEW)
    (failed,) = [o for o in outcomes if isinstance(o.action, HandOverVolumes)]
    assert not failed.succeeded and "simulated storage error" in failed.message
    assert sim.proxmox().nodes("srv-px1").lxc(3100).status.current.get()["status"] == "running", "started again"
    assert _config(sim, "srv-px1", 3100)["mp1"].split(",", 1)[0] == kept[3100], "the volume stays where it was"
    assert sim.proxmox().nodes("srv-px1").lxc(made.vmid).status.current.get()["status"] == "stopped"
    # The next try (the fault is spent) finishes it.
    outcomes = _cycle(run, INTENT, NEW)
    assert [o.succeeded for o in outcomes if isinstance(o.action, HandOverVolumes)] == [True]
    assert 3100 not in [r["vmid"] for r in sim.proxmox().cluster.resources.get(type="vm")]
    assert _volumes(sim)[_config(sim, "srv-px1", made.vmid)["mp1"].split(",", 1)[0]] == 8 << 30


def test_a_replacement_moved_to_another_node_follows_its_source_back_before_the_move(pve_sim_server: Any) -> None:
    """move_volume needs both CTs on one node: a replacement migrated away meanwhile (by the pool's balancing or
    an admin) is migrated back, stopped, and then receives the volume."""
    sim = _sim(pve_sim_server)
    run, kept = _start_fleet(sim)
    (made,) = [o.action for o in _cycle(run, INTENT, NEW) if isinstance(o.action, CreateContainer)]
    assert made.node == "srv-px1"
    api = sim.proxmox()
    upid = api.nodes("srv-px1").lxc(made.vmid).migrate.post(target="srv-px2")
    run._client.wait(upid, timeout_seconds=60)
    assert run._client.locate_container(made.vmid) == "srv-px2"
    outcomes = [o for o in _cycle(run, INTENT, NEW) if isinstance(o.action, HandOverVolumes)]
    assert [o.succeeded for o in outcomes] == [True], [o.message for o in outcomes]
    assert run._client.locate_container(made.vmid) == "srv-px1"
    config = _config(sim, "srv-px1", made.vmid)
    assert (
        config["mp1"].startswith(f"local-lvm:vm-{made.vmid}-disk-")
        and _volumes(sim)[config["mp1"].split(",")[0]] == 8 << 30
    )
    assert api.nodes("srv-px1").lxc(made.vmid).status.current.get()["status"] == "running"
    assert run._client.locate_container(3100) is None, "the source is destroyed once its volume moved"
    assert kept[3100] not in _volumes(sim), "the volume was renamed for its new owner, not copied"


def test_a_ct_still_holding_a_kept_volume_is_not_destroyed_by_a_handover(pve_sim_server: Any) -> None:
    """The last guard of a handover: the executor re-reads the source's config right before destroying it and
    refuses while a kept volume is still there (whatever the plan thought)."""
    from pve_operator.planning.actions import DestroyContainer

    sim = _sim(pve_sim_server)
    run, kept = _start_fleet(sim)
    guarded = DestroyContainer(3100, "srv-px1", True, "test", unless_holding=("mp1",))
    (outcome,) = run.apply([guarded], NEW)
    assert not outcome.succeeded and "still holds kept volume(s) mp1: not destroyed" in outcome.message
    assert _config(sim, "srv-px1", 3100)["mp1"].split(",", 1)[0] == kept[3100]
    assert sim.proxmox().nodes("srv-px1").lxc(3100).status.current.get()["status"] == "running"
    (plain,) = run.apply([DestroyContainer(3101, "srv-px2", True, "scale down")], NEW)
    assert plain.succeeded, "an ordinary destroy (scale-down) still takes the CT with its volumes"

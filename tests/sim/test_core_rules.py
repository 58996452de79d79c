"""PVE's rules as ``SimCluster`` applies them, called in-process (no HTTP): check order, what fails
synchronously and what inside the task, locks, config semantics, lagged statistics, quorum, faults
and scenario events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_sim.api_schema import ENDPOINTS
from pve_sim.cluster import SimCluster
from pve_sim.common import ApiResult, Subject
from pve_sim.errors import PveApiError
from pve_sim.handlers import ROUTES
from pve_sim.scenario import parse_scenario
from pve_sim.tasks import Task

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
START = 1_750_000_000.0
ROOT = Subject("root@pam")
OPERATOR = Subject("ctoperator@pve", "operator")
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
CT = "/nodes/{node}/lxc/{vmid}"


def lab_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    return data


def make_cluster(data: dict[str, Any] | None = None, *, time_scale: float = 0.0) -> SimCluster:
    cluster = SimCluster.from_scenario(
        parse_scenario(data or lab_data(), "test"), time_scale=time_scale, start_epoch=START
    )
    if time_scale:
        cluster.clock.freeze()
    return cluster


def call(cluster: SimCluster, method: str, template: str, subject: Subject = OPERATOR, **params: Any) -> Any:
    result = cluster.handle(method, template, subject, params)
    return result.data if isinstance(result, ApiResult) else result


def error(cluster: SimCluster, method: str, template: str, subject: Subject = OPERATOR, **params: Any) -> PveApiError:
    with pytest.raises(PveApiError) as caught:
        cluster.handle(method, template, subject, params)
    return caught.value


def task(cluster: SimCluster, upid: str) -> Task:
    found = cluster.tasks.get(upid)
    assert found is not None
    return found


def create(cluster: SimCluster, vmid: int = 101, subject: Subject = OPERATOR, **params: Any) -> str:
    defaults: dict[str, Any] = {"ostemplate": TEMPLATE, "rootfs": "local-lvm:8", "hostname": f"ct-{vmid}"}
    defaults.update(params)
    defaults = {key: value for key, value in defaults.items() if value is not None}
    upid = call(cluster, "POST", "/nodes/{node}/lxc", subject, node="srv-px1", vmid=vmid, **defaults)
    assert isinstance(upid, str)
    return upid


# ================================================================================= routes


def test_every_declared_endpoint_has_a_handler_with_the_same_proxying() -> None:
    declared = {key: spec for key, spec in ENDPOINTS.items() if key != ("POST", "/access/ticket")}

    assert set(ROUTES) == set(declared)
    assert {key: route.proxy for key, route in ROUTES.items()} == {
        key: spec.proxy_to_node for key, spec in declared.items()
    }


# ================================================================================= create


def test_create_fills_pves_defaults_and_normalises_tags() -> None:
    cluster = make_cluster()

    upid = call(
        cluster,
        "POST",
        "/nodes/{node}/lxc",
        node="srv-px1",
        vmid=101,
        ostemplate=TEMPLATE,
        rootfs="local-lvm:8",
        tags="Web,db web",
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        pool="lab",
    )
    config = call(cluster, "GET", f"{CT}/config", node="srv-px1", vmid=101)

    assert task(cluster, upid).exitstatus == "OK"
    assert config["hostname"] == "CT101"
    assert (config["memory"], config["swap"], config["unprivileged"]) == (512, 512, 1)
    assert config["rootfs"] == "local-lvm:vm-101-disk-0,size=8G"
    assert config["tags"] == "db;web"
    assert config["net0"].startswith("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:")
    assert config["net0"].endswith(",ip=dhcp,type=veth")
    assert (config["ostype"], config["arch"]) == ("debian", "amd64")
    assert "lock" not in config
    assert cluster.access.vm_pool[101] == "lab"


def test_create_without_rootfs_uses_the_default_storage_which_must_hold_ct_volumes() -> None:
    cluster = make_cluster()

    refused = error(cluster, "POST", "/nodes/{node}/lxc", node="srv-px1", vmid=101, ostemplate=TEMPLATE)
    upid = create(cluster, rootfs=None, storage="local-lvm")

    assert (refused.status, refused.errors) == (
        400,
        {"storage": "storage 'local' does not support container directories"},
    )
    assert task(cluster, upid).exitstatus == "OK"
    assert cluster.state.containers[101].config["rootfs"] == "local-lvm:vm-101-disk-0,size=4G"


def test_create_shows_lock_create_until_the_task_finishes() -> None:
    cluster = make_cluster(time_scale=1.0)

    upid = create(cluster)
    during = call(cluster, "GET", f"{CT}/status/current", node="srv-px1", vmid=101)
    cluster.advance_clock(6)
    after = call(cluster, "GET", f"{CT}/status/current", node="srv-px1", vmid=101)

    assert (during["lock"], during["name"], during["status"]) == ("create", "CT101", "stopped")
    assert task(cluster, upid).exitstatus == "OK"
    assert "lock" not in after and after["name"] == "ct-101"


def test_create_of_a_used_vmid_fails_before_any_permission_on_the_pool() -> None:
    cluster = make_cluster()

    taken = error(cluster, "POST", "/nodes/{node}/lxc", node="srv-px1", vmid=3150, ostemplate=TEMPLATE, pool="nope")
    missing_pool = error(
        cluster, "POST", "/nodes/{node}/lxc", node="srv-px1", vmid=101, ostemplate=TEMPLATE, pool="nope"
    )

    assert (taken.status, taken.message) == (500, "CT 3150 already exists on node 'srv-px2'")
    assert (missing_pool.status, missing_pool.message) == (403, "Permission check failed (pool 'nope' does not exist)")


def test_create_with_start_runs_a_separate_start_task() -> None:
    cluster = make_cluster()

    upid = create(cluster, start=True)
    start_tasks = [t for t in cluster.tasks if t.type == "vzstart"]

    assert task(cluster, upid).exitstatus == "OK"
    assert len(start_tasks) == 1 and start_tasks[0].exitstatus == "OK"
    assert cluster.state.containers[101].running


def test_create_with_a_missing_template_fails_in_the_task_and_leaves_nothing_behind() -> None:
    cluster = make_cluster()

    upid = create(cluster, ostemplate="local:vztmpl/missing.tar.zst")
    failed = task(cluster, upid)

    assert failed.exitstatus == "unable to create CT 101 - can't find file 'local:vztmpl/missing.tar.zst'"
    assert 101 not in cluster.state.containers
    assert any("successfully removed" in line for line in failed.lines)


def test_privileged_create_needs_sys_modify_on_root_on_pve9() -> None:
    cluster = make_cluster()

    refused = error(
        cluster, "POST", "/nodes/{node}/lxc", node="srv-px1", vmid=101, ostemplate=TEMPLATE, unprivileged=False
    )

    assert refused.message == "Permission check failed (/, Sys.Modify)"


def test_create_on_pve8_defaults_to_privileged() -> None:
    data = lab_data()
    data["cluster"]["pveVersion"] = "8.4.1"
    cluster = make_cluster(data)

    create(cluster, subject=ROOT)

    assert "unprivileged" not in cluster.state.containers[101].config


# ================================================================================= power and locks


def test_power_state_errors_are_synchronous_and_worded_like_pve() -> None:
    cluster = make_cluster()

    running = error(cluster, "POST", f"{CT}/status/start", node="srv-px2", vmid=3150)
    create(cluster)
    not_running = error(cluster, "POST", f"{CT}/status/stop", node="srv-px1", vmid=101)
    shutdown = error(cluster, "POST", f"{CT}/status/shutdown", node="srv-px1", vmid=101)
    reboot = error(cluster, "POST", f"{CT}/status/reboot", node="srv-px1", vmid=101)

    assert (running.status, running.message) == (500, "CT 3150 already running")
    assert not_running.message == "CT 101 not running"
    assert shutdown.message == "CT 101 not running"
    assert reboot.message == "VM 101 not running"


def test_start_of_a_ct_on_another_node_fails_inside_the_task() -> None:
    cluster = make_cluster()

    upid = call(cluster, "POST", f"{CT}/status/start", node="srv-px1", vmid=3150)

    assert task(cluster, upid).exitstatus == "Configuration file 'nodes/srv-px1/lxc/3150.conf' does not exist"


def test_lock_is_checked_inside_start_and_synchronously_by_config_put() -> None:
    data = lab_data()
    data["containers"][0]["status"] = "stopped"
    data["containers"][0]["lock"] = "backup"
    cluster = make_cluster(data)

    upid = call(cluster, "POST", f"{CT}/status/start", node="srv-px2", vmid=3150)
    put = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, memory=2048)
    skiplock = error(cluster, "POST", f"{CT}/status/start", node="srv-px2", vmid=3150, skiplock=True)
    forced = call(cluster, "POST", f"{CT}/status/start", ROOT, node="srv-px2", vmid=3150, skiplock=True)

    assert task(cluster, upid).exitstatus == "CT is locked (backup)"
    assert (put.status, put.message) == (500, "CT is locked (backup)")
    assert skiplock.errors == {"skiplock": "Only root may use this option."}
    assert task(cluster, forced).exitstatus == "OK"


def test_shutdown_longer_than_its_timeout_fails_unless_forced() -> None:
    # PVE::LXC::vm_stop: lxc-stop --nokill gives up after the timeout, then the command socket is
    # polled timeout + 5 s more; only a CT that still has not stopped fails (after 2 * 1 + 5 s).
    cluster = make_cluster(time_scale=1.0)
    cluster.set_container_ignores_shutdown(3150)

    upid = call(cluster, "POST", f"{CT}/status/shutdown", node="srv-px2", vmid=3150, timeout=1)
    cluster.advance_clock(7)
    still_running = cluster.state.containers[3150].running
    forced = call(cluster, "POST", f"{CT}/status/shutdown", node="srv-px2", vmid=3150, timeout=1, forceStop=True)
    cluster.advance_clock(1)

    assert task(cluster, upid).exitstatus == "container did not stop"
    assert still_running
    assert task(cluster, forced).exitstatus == "OK"
    assert not cluster.state.containers[3150].running


def test_a_second_task_waits_for_the_config_flock_and_times_out_after_ten_seconds() -> None:
    data = lab_data()
    data["timing"]["migrateMiBPerSecond"] = 100  # 16 GiB take 164 s to copy
    cluster = make_cluster(data, time_scale=1.0)

    migration = call(cluster, "POST", f"{CT}/migrate", node="srv-px2", vmid=3150, target="srv-px1", restart=True)
    cluster.advance_clock(10)  # shut down (4 s) and copying: the CT is stopped but the flock is held
    start = call(cluster, "POST", f"{CT}/status/start", node="srv-px2", vmid=3150)
    cluster.advance_clock(10)

    assert task(cluster, migration).running
    assert task(cluster, start).exitstatus == "can't lock file '/run/lock/lxc/pve-config-3150.lock' - got timeout"


def test_stop_after_a_shutdown_waits_for_it_and_succeeds() -> None:
    cluster = make_cluster(time_scale=1.0)

    shutdown = call(cluster, "POST", f"{CT}/status/shutdown", node="srv-px2", vmid=3150)
    stop = call(cluster, "POST", f"{CT}/status/stop", node="srv-px2", vmid=3150)
    cluster.advance_clock(6)

    assert task(cluster, shutdown).exitstatus == "OK"
    assert task(cluster, stop).exitstatus == "OK"
    assert not cluster.state.containers[3150].running


def test_stop_with_overrule_shutdown_aborts_the_running_shutdown() -> None:
    cluster = make_cluster(time_scale=1.0)

    shutdown = call(cluster, "POST", f"{CT}/status/shutdown", node="srv-px2", vmid=3150)
    stop = call(cluster, "POST", f"{CT}/status/stop", node="srv-px2", vmid=3150, **{"overrule-shutdown": True})
    cluster.advance_clock(2)

    assert task(cluster, shutdown).exitstatus == "interrupted by signal"
    assert task(cluster, stop).exitstatus == "OK"
    assert task(cluster, stop).lines[0] == f"overruled vzshutdown tasks: {shutdown}"


# ================================================================================= destroy


def test_destroy_refuses_a_running_ct_unless_forced_and_sets_lock_destroyed() -> None:
    cluster = make_cluster(time_scale=1.0)

    refused = error(cluster, "DELETE", CT, node="srv-px2", vmid=3150)
    upid = call(cluster, "DELETE", CT, node="srv-px2", vmid=3150, force=True)
    cluster.advance_clock(1)
    during = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)
    cluster.advance_clock(2)

    assert refused.message == "unable to destroy CT 3150 - container is running"
    assert during["lock"] == "destroyed"
    destroyed = task(cluster, upid)
    assert destroyed.exitstatus == "OK"
    assert destroyed.lines[0] == "forced to stop CT 3150 before destroying!"
    assert 3150 not in cluster.state.containers


def test_destroy_of_a_ha_managed_ct_needs_purge_which_removes_it_from_ha_and_pools() -> None:
    data = lab_data()
    data["containers"][0]["status"] = "stopped"
    data["containers"][0]["pool"] = "lab"
    data["ha"] = {"resources": [{"sid": "ct:3150", "state": "stopped"}]}
    cluster = make_cluster(data)

    refused = error(cluster, "DELETE", CT, node="srv-px2", vmid=3150)
    upid = call(cluster, "DELETE", CT, node="srv-px2", vmid=3150, purge=True)

    assert refused.message == "unable to remove CT 3150 - used in HA resources and purge parameter not set."
    assert "NOTE: removed CT 3150 from HA resource configuration." in task(cluster, upid).lines
    assert "ct:3150" not in cluster.state.ha_resources
    assert 3150 not in cluster.access.pools["lab"].vms


def test_protected_ct_cannot_be_destroyed() -> None:
    cluster = make_cluster()
    create(cluster, protection=True)

    refused = error(cluster, "DELETE", CT, node="srv-px1", vmid=101)

    assert refused.message == "can't remove CT 101 - protection mode enabled"


# ================================================================================= config


def test_config_put_hot_applies_memory_and_cores_and_keeps_the_rest_pending_while_running() -> None:
    cluster = make_cluster()

    result = call(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, memory=8192, cores=4, ostype="ubuntu")
    effective = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)
    current = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150, current=True)
    status = call(cluster, "GET", f"{CT}/status/current", node="srv-px2", vmid=3150)

    assert result is None
    assert (current["memory"], current["cores"], current["ostype"]) == (8192, 4, "debian")
    assert effective["ostype"] == "ubuntu"
    assert (status["maxmem"], status["cpus"]) == (8192 * 1024 * 1024, 4)


def test_pending_changes_apply_at_the_next_start() -> None:
    cluster = make_cluster()
    call(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, ostype="ubuntu")

    call(cluster, "POST", f"{CT}/status/stop", node="srv-px2", vmid=3150)
    call(cluster, "POST", f"{CT}/status/start", node="srv-px2", vmid=3150)

    assert call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150, current=True)["ostype"] == "ubuntu"
    assert not cluster.state.containers[3150].pending


def test_config_put_rejects_stale_digest_readonly_and_required_options() -> None:
    cluster = make_cluster()
    digest = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)["digest"]
    call(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, description="changed")

    stale = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, memory=1024, digest=digest)
    readonly = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, unprivileged=False)
    required = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, delete="memory")
    nothing = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150)
    both = error(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, delete="cores", cores=2)

    assert stale.message == "detected modified configuration - file changed by other user? Try again."
    assert readonly.message == "unable to modify read-only option: 'unprivileged'"
    assert required.message == "unable to delete required option 'memory'"
    assert nothing.message == "no options specified"
    assert both.errors == {"delete": "you can't use '-cores' and -delete cores' at the same time"}


def test_digest_changes_with_the_config_and_only_then() -> None:
    cluster = make_cluster()
    first = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)["digest"]
    again = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)["digest"]

    call(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, tags="a,b")
    changed = call(cluster, "GET", f"{CT}/config", node="srv-px2", vmid=3150)["digest"]

    assert first == again != changed
    assert len(first) == 40


# ================================================================================= lagged statistics


def test_new_ct_is_unknown_in_cluster_resources_until_the_next_broadcast() -> None:
    cluster = make_cluster(time_scale=1.0)
    cluster.advance_clock(3)

    create(cluster)
    cluster.advance_clock(6)
    before = _resource(cluster, 101)
    authoritative = call(cluster, "GET", f"{CT}/status/current", node="srv-px1", vmid=101)
    cluster.advance_clock(1)  # elapsed 10: pvestatd broadcasts
    after = _resource(cluster, 101)

    assert before == {"id": "lxc/101", "vmid": 101, "node": "srv-px1", "type": "lxc", "status": "unknown"}
    assert authoritative["status"] == "stopped"
    assert after["status"] == "stopped" and after["name"] == "ct-101"


def test_cluster_resources_report_status_as_of_the_last_broadcast() -> None:
    cluster = make_cluster(time_scale=1.0)
    cluster.advance_clock(10)

    call(cluster, "POST", f"{CT}/status/stop", node="srv-px2", vmid=3150)
    cluster.advance_clock(2)
    lagging = _resource(cluster, 3150)
    cluster.advance_clock(8)
    caught_up = _resource(cluster, 3150)

    assert lagging["status"] == "running"
    assert caught_up["status"] == "stopped" and caught_up["mem"] == 0


def test_lock_and_tags_in_cluster_resources_are_live() -> None:
    cluster = make_cluster(time_scale=1.0)
    cluster.advance_clock(10)

    call(cluster, "PUT", f"{CT}/config", node="srv-px2", vmid=3150, tags="x")
    call(cluster, "POST", f"{CT}/migrate", node="srv-px2", vmid=3150, target="srv-px1", restart=True)
    cluster.advance_clock(7)  # checks (2 s), shutdown (4 s): phase 1 has set the lock

    entry = _resource(cluster, 3150)
    assert entry["tags"] == "x" and entry["lock"] == "migrate"


def _resource(cluster: SimCluster, vmid: int) -> dict[str, Any]:
    entries = call(cluster, "GET", "/cluster/resources", type="vm")
    return next(e for e in entries if e.get("vmid") == vmid)


# ================================================================================= nodes, quorum, faults


def test_offline_node_answers_595_and_unknown_node_a_hostname_lookup_error() -> None:
    cluster = make_cluster()
    cluster.set_node_online("srv-px2", False)

    offline = error(cluster, "GET", f"{CT}/status/current", node="srv-px2", vmid=3150)
    unknown = error(cluster, "GET", "/nodes/{node}/lxc", node="srv-px9")

    assert (offline.status, offline.message, offline.empty_body) == (595, "No route to host", True)
    assert (unknown.status, unknown.message) == (
        500,
        "hostname lookup 'srv-px9' failed - failed to get address info for: srv-px9: Name or service not known",
    )


def test_two_node_cluster_with_one_node_down_has_no_quorum() -> None:
    cluster = make_cluster()
    cluster.set_node_online("srv-px2", False)

    refused = error(cluster, "POST", "/nodes/{node}/lxc", node="srv-px1", vmid=101, ostemplate=TEMPLATE)
    nodes = {n["node"]: n["status"] for n in call(cluster, "GET", "/nodes")}

    assert refused.message == "cluster not ready - no quorum?"
    assert nodes == {"srv-px1": "online", "srv-px2": "offline"}


def test_node_going_offline_stops_its_cts_and_onboot_cts_return_with_it() -> None:
    data = lab_data()
    data["containers"][0]["onboot"] = True
    cluster = make_cluster(data)

    cluster.set_node_online("srv-px2", False)
    down = cluster.state.containers[3150].running
    cluster.set_node_online("srv-px2", True)

    assert not down
    assert cluster.state.containers[3150].running


def test_failed_task_injection_hits_the_next_task_of_that_type_only() -> None:
    cluster = make_cluster()
    create(cluster)
    cluster.fail_tasks("vzstart", "startup for container '101' failed")

    first = call(cluster, "POST", f"{CT}/status/start", node="srv-px1", vmid=101)
    second = call(cluster, "POST", f"{CT}/status/start", node="srv-px1", vmid=101)

    assert task(cluster, first).exitstatus == "startup for container '101' failed"
    assert task(cluster, second).exitstatus == "OK"


def test_failed_migration_aborts_restarts_the_ct_on_the_source_and_reports_migration_aborted() -> None:
    cluster = make_cluster()
    cluster.fail_tasks("vzmigrate", "storage migration failed: disk full")

    upid = call(cluster, "POST", f"{CT}/migrate", node="srv-px2", vmid=3150, target="srv-px1", restart=True)
    failed = task(cluster, upid)
    ct = cluster.state.containers[3150]

    assert failed.exitstatus == "migration aborted"
    assert any(line.endswith("ERROR: storage migration failed: disk full") for line in failed.lines)
    assert any(
        "ERROR: migration aborted (duration 00:00:00): storage migration failed: disk full" in line
        for line in failed.lines
    )
    assert (ct.node, ct.running, ct.lock) == ("srv-px2", True, None)


def test_migration_to_an_offline_node_fails_inside_the_task() -> None:
    data = lab_data()
    data["nodes"].append({**data["nodes"][0], "name": "srv-px3"})
    cluster = make_cluster(data)
    cluster.set_node_online("srv-px3", False)

    upid = call(cluster, "POST", f"{CT}/migrate", node="srv-px2", vmid=3150, target="srv-px3", restart=True)

    assert task(cluster, upid).exitstatus == "migration aborted"
    assert task(cluster, upid).lines[-2].endswith("Can't connect to destination address using public key")
    assert cluster.state.containers[3150].node == "srv-px2"


def test_scenario_events_apply_at_their_simulated_time() -> None:
    data = lab_data()
    data["events"] = [
        {"at": 30, "action": "setContainerUsage", "vmid": 3150, "memory": 0.9},
        {"at": 60, "action": "nodeOffline", "node": "srv-px1"},
        {"at": 90, "action": "failTasks", "taskType": "vzstop", "message": "boom"},
    ]
    cluster = make_cluster(data, time_scale=1.0)

    cluster.advance_clock(29)
    before = cluster.container_usage(3150)["mem"]
    cluster.advance_clock(1)
    after = cluster.container_usage(3150)["mem"]
    cluster.advance_clock(30)
    offline = not cluster.state.nodes["srv-px1"].online
    cluster.advance_clock(30)

    assert before != after == int(0.9 * 4096 * 1024 * 1024)
    assert offline
    assert cluster.faults.describe()["task_faults"] == [
        {"task_type": "vzstop", "message": "boom", "remaining": 1, "node": None, "vmid": None}
    ]


def test_nextid_is_a_string_and_asserting_a_used_id_is_a_parameter_error() -> None:
    cluster = make_cluster()

    assert call(cluster, "GET", "/cluster/nextid") == "100"
    assert call(cluster, "GET", "/cluster/nextid", vmid=200) == "200"
    assert error(cluster, "GET", "/cluster/nextid", vmid=3150).errors == {"vmid": "VM 3150 already exists"}


def test_ha_managed_ct_gets_ha_tasks_and_the_ha_stack_acts() -> None:
    data = lab_data()
    data["ha"] = {"resources": [{"sid": "ct:3150", "state": "started"}]}
    cluster = make_cluster(data, time_scale=1.0)

    upid = call(cluster, "POST", f"{CT}/status/stop", node="srv-px2", vmid=3150)
    cluster.advance_clock(10)

    assert task(cluster, upid).type == "hastop"
    assert task(cluster, upid).lines[0] == "Requesting HA stop for CT 3150"
    assert not cluster.state.containers[3150].running
    assert call(cluster, "GET", f"{CT}/status/current", node="srv-px2", vmid=3150)["ha"]["state"] == "stopped"


def test_state_dump_is_json_serialisable_and_complete() -> None:
    import json

    cluster = make_cluster()
    create(cluster, start=True)

    dump = cluster.state_dump()
    json.dumps(dump)

    assert set(dump["containers"]) == {"101", "3150"}  # type: ignore[arg-type]
    assert dump["internal_errors"] == []
    assert len(dump["tasks"]) == 2  # type: ignore[arg-type]


def test_ha_requests_take_effect_at_once_with_instant_tasks() -> None:
    data = lab_data()
    data["ha"] = {"resources": [{"sid": "ct:3150", "state": "started"}]}
    cluster = make_cluster(data)

    call(cluster, "POST", f"{CT}/status/shutdown", node="srv-px2", vmid=3150)
    stopped = not cluster.state.containers[3150].running
    upid = call(cluster, "POST", f"{CT}/migrate", node="srv-px2", vmid=3150, target="srv-px1")

    assert stopped
    assert task(cluster, upid).type == "hamigrate"
    assert cluster.state.containers[3150].node == "srv-px1"

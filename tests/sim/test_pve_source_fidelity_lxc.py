"""pve_sim follows Proxmox VE's own sources for CT config locking, create, dead nodes, shutdown and
restart migration -- checked over real HTTPS with proxmoxer.

Each test names the PVE source (repository, file, function) whose behaviour it pins down. Servers run
at time scale 1 with the clock frozen: simulated time moves only when a test advances it, so a call
that waits for a config flock blocks until the test moves the clock (from the main thread while the
call waits in another).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from pve_sim.scenario import parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
OPERATOR = ("ctoperator@pve", "operator")


def lab_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    # A user that may do everything with CTs except VM.Config.Options.
    data["users"].append({"userid": "nooptions@pve", "password": "nooptions-password"})
    data["roles"].append(
        {
            "id": "NoOptions",
            "privileges": [
                "VM.Allocate",
                "VM.Audit",
                "VM.Config.CPU",
                "VM.Config.Memory",
                "VM.Config.Disk",
                "VM.Config.Network",
                "Datastore.AllocateSpace",
                "Datastore.Audit",
                "SDN.Use",
            ],
        }
    )
    data["acl"].append({"path": "/", "role": "NoOptions", "user": "nooptions@pve"})
    return data


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    started = pve_sim_server(parse_scenario(lab_data(), "fidelity"), time_scale=1.0)
    started.cluster.clock.freeze()
    return started


@pytest.fixture
def api(server: SimTestServer) -> Any:
    return server.proxmox(OPERATOR[0], token=OPERATOR[1])


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def task_status(api: Any, upid: str) -> dict[str, Any]:
    result: dict[str, Any] = api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).status.get()
    return result


def task_log(api: Any, upid: str) -> list[str]:
    return [line["t"] for line in api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).log.get(limit=0)]


def task_seconds(api: Any, upid: str) -> int:
    """endtime - starttime of a finished task (from the node's task list, which has both)."""
    node = Tasks.decode_upid(upid)["node"]
    entry = next(t for t in api.nodes(node).tasks.get(source="all", limit=1000) if t["upid"] == upid)
    return int(entry["endtime"]) - int(entry["starttime"])


def advance_to(server: SimTestServer, elapsed: float) -> None:
    """Move the clock to ``elapsed`` simulated seconds since start (pvestatd broadcasts every 10 s of it)."""
    server.cluster.advance_clock(elapsed - server.cluster.clock.elapsed())


def resource(api: Any, vmid: int) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in api.cluster.resources.get(type="vm") if e["vmid"] == vmid)
    return entry


def in_background(server: SimTestServer, call: Any) -> tuple[ThreadPoolExecutor, Future[Any]]:
    """Run ``call(api)`` with a client of its own in another thread; wait until it is blocked."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(lambda: call(server.proxmox(OPERATOR[0], token=OPERATOR[1])))
    time.sleep(0.3)
    return pool, future


def put_config_error(future: Future[Any]) -> tuple[int, str]:
    with pytest.raises(ResourceException) as caught:
        future.result(timeout=30)
    return caught.value.status_code, caught.value.content


# ============================================================= 3. config updates wait for the flock


def test_config_put_waits_for_a_start_task_holding_the_flock_then_succeeds(server: SimTestServer, api: Any) -> None:
    """pve-container src/PVE/API2/LXC/Config.pm update_vm runs under PVE::LXC::Config->lock_config;
    src/PVE/API2/LXC/Status.pm vm_start's worker holds the same flock (lock_config) for its whole run
    (2 simulated seconds here); pve-common src/PVE/Tools.pm lock_file_full waits up to 10 s."""
    api.nodes("srv-px2").lxc(3150).status.stop.post()
    server.cluster.advance_clock(1)
    start = api.nodes("srv-px2").lxc(3150).status.start.post()

    pool, put = in_background(server, lambda c: c.nodes("srv-px2").lxc(3150).config.put(memory=2048))
    with pool:
        blocked = not put.done()
        server.cluster.advance_clock(2)  # the start ends: the flock is free
        result = put.result(timeout=30)

    assert blocked
    assert result is None
    assert task_status(api, start)["exitstatus"] == "OK"
    assert api.nodes("srv-px2").lxc(3150).config.get()["memory"] == 2048


def test_config_put_on_the_source_waits_for_a_migration_then_finds_the_ct_gone(
    server: SimTestServer, root: Any, api: Any
) -> None:
    """pve-container src/PVE/LXC/Migrate.pm lock_vm: the vzmigrate worker holds lock_config while it
    runs, so update_vm (src/PVE/API2/LXC/Config.pm) waits; when it gets the flock the config has
    moved to the target and load_config fails on the source node."""
    root.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="local-lvm:1", unprivileged=1)
    server.cluster.advance_clock(6)
    migrate = api.nodes("srv-px1").lxc(201).migrate.post(target="srv-px2")  # stopped: about 6.6 s

    pool, put = in_background(server, lambda c: c.nodes("srv-px1").lxc(201).config.put(memory=1024))
    with pool:
        blocked = not put.done()
        # The lock file is node-local (/run/lock/lxc): the target node does not wait, and the config
        # is still on the source.
        with pytest.raises(ResourceException) as on_target:
            api.nodes("srv-px2").lxc(201).config.put(memory=1024)
        server.cluster.advance_clock(8)
        status, message = put_config_error(put)

    assert blocked
    assert on_target.value.content == "Configuration file 'nodes/srv-px2/lxc/201.conf' does not exist"
    assert task_status(api, migrate)["exitstatus"] == "OK"
    assert (status, message) == (500, "Configuration file 'nodes/srv-px1/lxc/201.conf' does not exist")


def test_config_put_fails_after_10_seconds_when_the_task_outlasts_them(server: SimTestServer, api: Any) -> None:
    """pve-common src/PVE/Tools.pm lock_file_full + run_with_timeout: after 10 s the API call dies
    with "can't lock file '/run/lock/lxc/pve-config-<vmid>.lock' - got timeout" (HTTP 500; the lock
    path is pve-container src/PVE/LXC/Config.pm config_file_lock). The flock is not the `lock:`
    property: this CT has none."""
    server.cluster.set_container_ignores_shutdown(3150)
    shutdown = api.nodes("srv-px2").lxc(3150).status.shutdown.post(timeout=60)  # holds the flock 125 s

    pool, put = in_background(server, lambda c: c.nodes("srv-px2").lxc(3150).config.put(memory=2048))
    with pool:
        server.cluster.advance_clock(9.5)
        still_waiting = not put.done()
        server.cluster.advance_clock(0.5)
        status, message = put_config_error(put)

    assert still_waiting
    assert (status, message) == (500, "can't lock file '/run/lock/lxc/pve-config-3150.lock' - got timeout")
    assert task_status(api, shutdown)["status"] == "running"
    assert api.nodes("srv-px2").lxc(3150).config.get()["memory"] == 4096


def test_the_lock_property_fails_a_config_put_at_once(server: SimTestServer, api: Any) -> None:
    """The flock is not the `lock:` property: update_vm (pve-container src/PVE/API2/LXC/Config.pm)
    calls check_lock (pve-guest-common src/PVE/AbstractConfig.pm) once it holds the flock, so a CT
    left with `lock: migrate` and no task running answers "CT is locked (migrate)" without waiting."""
    server.cluster.state.containers[3150].config["lock"] = "migrate"  # e.g. a migration that died

    with pytest.raises(ResourceException) as caught:
        api.nodes("srv-px2").lxc(3150).config.put(memory=1024)

    assert (caught.value.status_code, caught.value.content) == (500, "CT is locked (migrate)")


# ============================================================= 4. what create's config holds when


def test_create_shows_lock_create_then_the_full_config_without_lock_then_the_defaults(
    server: SimTestServer, api: Any
) -> None:
    """pve-container src/PVE/API2/LXC.pm create_vm: create_and_lock_config writes `{lock: create}`
    before the UPID is returned (pve-guest-common src/PVE/AbstractConfig.pm); the worker's `$code`
    allocates and unpacks, then after OS detection write_config($vmid, $conf) writes the config
    built from the parameters -- which never had `lock`, so the lock is gone from then on -- and,
    after post_create_hook, adds hostname/memory/swap defaults and writes again; the pool comes
    last (PVE::AccessControl::add_vm_to_pool)."""
    upid = api.nodes("srv-px1").lxc.post(
        vmid=201,
        ostemplate=TEMPLATE,
        hostname="web-1",
        tags="web;lab",
        description="first line\nsecond line",
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        rootfs="local-lvm:1",
        unprivileged=1,
        pool="lab",
    )
    config_1 = api.nodes("srv-px1").lxc(201).config.get()
    resource_1 = resource(api, 201)
    name_1 = api.nodes("srv-px1").lxc(201).status.current.get()["name"]

    server.cluster.advance_clock(5)  # unpacked: the config as built, no lock, no defaults yet
    config_2 = api.nodes("srv-px1").lxc(201).config.get()
    resource_2 = resource(api, 201)
    name_2 = api.nodes("srv-px1").lxc(201).status.current.get()["name"]
    running_2 = task_status(api, upid)["status"]
    pool_2 = {m["vmid"] for m in api.pools("lab").get()["members"] if "vmid" in m}

    server.cluster.advance_clock(1)  # defaults written, pool joined, task done
    config_3 = api.nodes("srv-px1").lxc(201).config.get()
    pool_3 = {m["vmid"] for m in api.pools("lab").get()["members"] if "vmid" in m}

    assert {k: v for k, v in config_1.items() if k != "digest"} == {"lock": "create"}
    assert resource_1["lock"] == "create" and "tags" not in resource_1
    assert name_1 == "CT201"

    assert running_2 == "running"
    assert "lock" not in config_2 and "lock" not in resource_2
    assert config_2["hostname"] == "web-1" and name_2 == "web-1"
    assert config_2["tags"] == "lab;web" and resource_2["tags"] == "lab;web"
    assert config_2["description"] == "first line\nsecond line\n"
    assert config_2["net0"].startswith("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:")
    assert config_2["rootfs"] == "local-lvm:vm-201-disk-0,size=1G"
    assert (config_2["arch"], config_2["ostype"], config_2["unprivileged"]) == ("amd64", "debian", 1)
    assert "memory" not in config_2 and "swap" not in config_2
    assert 201 not in pool_2

    assert task_status(api, upid)["exitstatus"] == "OK"
    assert (config_3["memory"], config_3["swap"], config_3["hostname"]) == (512, 512, "web-1")
    assert 201 in pool_3


def test_create_without_hostname_gets_ct_vmid_only_in_the_last_write(server: SimTestServer, api: Any) -> None:
    """create_vm's `$conf->{hostname} ||= "CT$vmid"` runs after the first full write_config."""
    api.nodes("srv-px1").lxc.post(vmid=202, ostemplate=TEMPLATE, rootfs="local-lvm:1", unprivileged=1)
    server.cluster.advance_clock(5)
    before = api.nodes("srv-px1").lxc(202).config.get()
    server.cluster.advance_clock(1)
    after = api.nodes("srv-px1").lxc(202).config.get()

    assert "hostname" not in before and "lock" not in before
    assert after["hostname"] == "CT202"


# ============================================================= 5. a dead node's CTs go stale, then unknown


def test_dead_nodes_cts_keep_their_last_status_for_5_minutes_then_become_unknown(
    server: SimTestServer, api: Any
) -> None:
    """pve-manager PVE/API2Tools.pm extract_node_stats: a node not online in the corosync membership
    is `offline` at once, without uptime/cpu/mem/disk; extract_vm_stats: a CT's status and stats are
    the node's last pvestatd broadcast as long as pmxcfs has it -- pve-cluster src/pmxcfs/status.c
    rrd_entry_is_old drops entries older than 5 minutes -- then only `status: unknown` is left."""
    advance_to(server, 15)  # broadcasts at 0 and 10 (statsLagSeconds 10)
    live = resource(api, 3150)
    server.cluster.set_node_online("srv-px2", False)  # lost at 15: its last broadcast was at 10

    advance_to(server, 115)
    stale = resource(api, 3150)
    node = next(e for e in api.cluster.resources.get(type="node") if e["node"] == "srv-px2")
    with pytest.raises(ResourceException) as caught:
        api.nodes("srv-px2").status.get()

    advance_to(server, 310)  # 300 s after the broadcast at 10: still kept (diff > expire)
    last_second = resource(api, 3150)
    advance_to(server, 311)
    expired = resource(api, 3150)
    node_expired = next(e for e in api.cluster.resources.get(type="node") if e["node"] == "srv-px2")

    assert live["status"] == "running"
    assert stale["status"] == "running" and stale["uptime"] == live["uptime"]
    assert (stale["mem"], stale["cpu"], stale["netin"]) == (live["mem"], live["cpu"], live["netin"])
    assert stale["tags"] == "legacy"  # read from the config, which pmxcfs still has
    assert node["status"] == "offline" and "uptime" not in node and "mem" not in node
    assert "maxmem" in node  # the node's own RRD entry is kept just as long
    assert caught.value.status_code == 595
    assert last_second["status"] == "running"
    assert expired == {
        "id": "lxc/3150",
        "vmid": 3150,
        "node": "srv-px2",
        "type": "lxc",
        "status": "unknown",
        "tags": "legacy",
    }
    assert node_expired["status"] == "offline" and "maxmem" not in node_expired and "level" not in node_expired


def test_stale_window_is_configurable(pve_sim_server: SimServerFactory) -> None:
    """The 5 minutes are pmxcfs's; the simulator can shorten them (SimCluster.stats_expire_seconds)."""
    server = pve_sim_server(parse_scenario(lab_data(), "fidelity"), time_scale=1.0)
    server.cluster.clock.freeze()
    server.cluster.stats_expire_seconds = 30
    api = server.proxmox(OPERATOR[0], token=OPERATOR[1])
    advance_to(server, 10)
    server.cluster.set_node_online("srv-px2", False)

    advance_to(server, 40)
    kept = resource(api, 3150)["status"]
    advance_to(server, 41)

    assert kept == "running"
    assert resource(api, 3150)["status"] == "unknown"


def test_node_back_online_reports_its_cts_afresh(server: SimTestServer, api: Any) -> None:
    server.cluster.advance_clock(10)
    server.cluster.set_node_online("srv-px2", False)
    server.cluster.advance_clock(20)
    server.cluster.set_node_online("srv-px2", True)  # 3150 is not onboot: it stays stopped
    server.cluster.advance_clock(10)

    assert resource(api, 3150)["status"] == "stopped"


# ============================================================= 6. smaller ones


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("one line", "one line\n"),
        ("first\nsecond", "first\nsecond\n"),
        ("trailing\n\n", "trailing\n"),
        ("\nleading blank", "\nleading blank\n"),
        ("inner\n\nblank", "inner\n\nblank\n"),
    ],
)
def test_description_comes_back_with_a_newline_after_every_line(api: Any, written: str, read: str) -> None:
    """pve-container src/PVE/LXC/Config.pm write_pct_config writes `#<line>` for each line of
    split(/\\n/, $descr) (trailing empty lines dropped); parse_pct_config appends "\\n" to each."""
    api.nodes("srv-px2").lxc(3150).config.put(description=written)

    assert api.nodes("srv-px2").lxc(3150).config.get()["description"] == read


def test_bare_disk_size_is_an_arbitrary_path_for_non_root(server: SimTestServer, api: Any, root: Any) -> None:
    """pve-container src/PVE/LXC.pm check_ct_modify_config_perm: a rootfs/mp volume that is not
    $NEW_DISK_RE (`<storage>:<size>`) goes to pve-storage src/PVE/Storage.pm check_volume_access,
    which dies "Only root can pass arbitrary filesystem paths." -- no newline, so Perl adds
    " at /usr/share/perl5/PVE/Storage.pm line 651.". root skips the check and create_vm turns the
    bare size into "$storage:8"."""
    message = "Only root can pass arbitrary filesystem paths. at /usr/share/perl5/PVE/Storage.pm line 651."
    with pytest.raises(ResourceException) as on_create:
        api.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="8", storage="local-lvm", unprivileged=1)
    with pytest.raises(ResourceException) as on_update:
        api.nodes("srv-px2").lxc(3150).config.put(mp0="8,mp=/srv")
    upid = root.nodes("srv-px1").lxc.post(
        vmid=201, ostemplate=TEMPLATE, rootfs="8", storage="local-lvm", unprivileged=1
    )
    server.cluster.advance_clock(6)

    assert (on_create.value.status_code, on_create.value.content) == (500, message)
    assert (on_update.value.status_code, on_update.value.content) == (500, message)
    assert task_status(root, upid)["exitstatus"] == "OK"
    assert root.nodes("srv-px1").lxc(201).config.get()["rootfs"] == "local-lvm:vm-201-disk-0,size=8G"


def test_debug_is_a_config_option_that_needs_vm_config_options(server: SimTestServer, api: Any) -> None:
    """pve-container src/PVE/LXC/Config.pm $confdesc->{debug} is a config option; create_vm stores
    it and check_ct_modify_config_perm (src/PVE/LXC.pm) checks its `else` branch: VM.Config.Options."""
    limited = server.proxmox("nooptions@pve", password="nooptions-password")
    with pytest.raises(ResourceException) as on_create:
        limited.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="local-lvm:1", debug=1)
    with pytest.raises(ResourceException) as on_update:
        limited.nodes("srv-px2").lxc(3150).config.put(debug=1)
    api.nodes("srv-px1").lxc.post(vmid=202, ostemplate=TEMPLATE, rootfs="local-lvm:1", unprivileged=1, debug=1)
    server.cluster.advance_clock(6)

    assert (on_create.value.status_code, on_create.value.content) == (
        403,
        "Permission check failed (/vms/201, VM.Config.Options)",
    )
    assert (on_update.value.status_code, on_update.value.content) == (
        403,
        "Permission check failed (/vms/3150, VM.Config.Options)",
    )
    assert api.nodes("srv-px1").lxc(202).config.get()["debug"] == 1


def test_migrating_a_ct_started_meanwhile_dies_with_perls_line_suffix(server: SimTestServer, api: Any) -> None:
    """pve-container src/PVE/LXC/Migrate.pm prepare: `die "running container can only be migrated
    in restart mode" if !$restart;` has no newline: Perl appends " at
    /usr/share/perl5/PVE/LXC/Migrate.pm line 49." (pve-container 6.0.18, PVE 9.1.2). The API's own
    check (src/PVE/API2/LXC.pm migrate_vm) passed because the CT was stopped; a start task held
    the config flock, so the migrate worker (lock_vm = lock_config) ran after it."""
    api.nodes("srv-px2").lxc(3150).status.stop.post()
    server.cluster.advance_clock(1)
    api.nodes("srv-px2").lxc(3150).status.start.post()
    migrate = api.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1")
    server.cluster.advance_clock(5)
    log = task_log(api, migrate)

    assert task_status(api, migrate)["exitstatus"] == "migration aborted"
    assert any(
        line.endswith(
            "ERROR: migration aborted (duration 00:00:02): running container can only be migrated in restart"
            " mode at /usr/share/perl5/PVE/LXC/Migrate.pm line 49."
        )
        for line in log
    ), log
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


def test_shutdown_of_a_ct_that_ignores_it_fails_after_twice_the_timeout_plus_5(server: SimTestServer, api: Any) -> None:
    """pve-container src/PVE/LXC.pm vm_stop($vmid, 0, $timeout, $forceStop): `lxc-stop -n <vmid>
    --nokill --timeout <t>` (run_command timeout t + 5) exits 1 after t s; the error is warned, then
    the command socket is polled t + 5 s more; then `die "container did not stop\\n"`."""
    server.cluster.set_container_ignores_shutdown(3150)
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post(timeout=10)
    server.cluster.advance_clock(24.5)
    before = task_status(api, upid)["status"]
    server.cluster.advance_clock(0.5)
    status = task_status(api, upid)

    assert before == "running"
    assert (status["exitstatus"], task_seconds(api, upid)) == ("container did not stop", 25)
    assert "command 'lxc-stop -n 3150 --nokill --timeout 10' failed: exit code 1" in task_log(api, upid)
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


def test_forced_shutdown_kills_at_the_timeout(server: SimTestServer, api: Any) -> None:
    """vm_stop with $kill_after_timeout: no --nokill, so lxc-stop kills the CT once t has passed."""
    server.cluster.set_container_ignores_shutdown(3150)
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post(timeout=10, forceStop=1)
    server.cluster.advance_clock(10)
    status = task_status(api, upid)

    assert (status["exitstatus"], task_seconds(api, upid)) == ("OK", 10)
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "stopped"


def test_a_slow_shutdown_still_succeeds_during_vm_stops_extra_wait(server: SimTestServer, api: Any) -> None:
    """The lab's CT needs 4 s to shut down; with timeout 2, lxc-stop gives up at 2 s, but vm_stop's
    poll of the command socket (up to 2 + 5 s more) sees it stop at 4 s: the task is OK."""
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post(timeout=2)
    server.cluster.advance_clock(4)
    status = task_status(api, upid)

    assert (status["exitstatus"], task_seconds(api, upid)) == ("OK", 4)
    assert "command 'lxc-stop -n 3150 --nokill --timeout 2' failed: exit code 1" in task_log(api, upid)


# ============================================================= 9. restart migration of a CT ignoring shutdown


def test_restart_migration_of_a_ct_that_ignores_shutdown_fails_and_leaves_it_running(
    server: SimTestServer, api: Any
) -> None:
    """pve-container src/PVE/LXC/Migrate.pm prepare: in restart mode it logs "shutdown CT <vmid>" and
    calls PVE::LXC::vm_stop($vmid, 0, $timeout) -- no kill -- which dies "container did not stop";
    pve-guest-common src/PVE/AbstractMigrate.pm migrate logs "migration aborted (duration ...): <err>"
    and dies "migration aborted". prepare failed before phase 1: no `lock: migrate`, no restart on
    the source -- the CT never stopped, so it keeps running there."""
    server.cluster.set_container_ignores_shutdown(3150)
    upid = api.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1", restart=1, timeout=10)
    server.cluster.advance_clock(2 + 25)  # ssh check (half the base time), then 2 * 10 + 5
    status = task_status(api, upid)
    log = task_log(api, upid)
    current = api.nodes("srv-px2").lxc(3150).status.current.get()

    assert status["exitstatus"] == "migration aborted"
    assert task_seconds(api, upid) == 27
    assert any(line.endswith(" shutdown CT 3150") for line in log)
    assert "command 'lxc-stop -n 3150 --nokill --timeout 10' failed: exit code 1" in log
    assert log[-2].endswith("ERROR: migration aborted (duration 00:00:27): container did not stop"), log
    assert log[-1] == "TASK ERROR: migration aborted"
    assert (current["status"], "lock" in current) == ("running", False)
    assert api.nodes("srv-px2").lxc(3150).config.get()["hostname"] == "legacy-db"


def test_scenario_and_admin_set_ignores_shutdown_and_the_stale_window(pve_sim_server: SimServerFactory) -> None:
    """The knobs the operator's tests use: ``ignoresShutdown`` per CT and ``statsExpireSeconds``."""
    data = lab_data()
    data["containers"][0]["ignoresShutdown"] = True
    data.setdefault("cluster", {})["statsExpireSeconds"] = 42
    started = pve_sim_server(parse_scenario(data, "knobs"), time_scale=1.0)
    first = int(data["containers"][0]["vmid"])
    assert started.cluster.state.containers[first].ignores_shutdown
    assert started.cluster.stats_expire_seconds == 42
    started.admin.set_container_ignores_shutdown(first, False)
    assert not started.cluster.state.containers[first].ignores_shutdown
    other = first
    started.admin.set_container_ignores_shutdown(other)
    assert started.cluster.state.containers[other].ignores_shutdown
    started.admin.set_container_ignores_shutdown(other, False)
    assert not started.cluster.state.containers[other].ignores_shutdown
    bad = lab_data()
    bad["containers"][0]["ignoresShutdown"] = "sometimes"
    with pytest.raises(Exception, match="ignoresShutdown"):
        parse_scenario(bad, "bad")

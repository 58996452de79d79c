"""The CT settings of issue 11 §1, created through the executor against pve_sim (HTTPS, the real
proxmoxer client, PVE's parameter formats and permission rules): what lands in the CT's config, a
protected CT the policy removes, a root password that never reaches a message, and the feature rule
the operator checks before creating is the one Proxmox VE enforces.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pve_operator.api.v1alpha1 import ContainerPolicySpec
from pve_operator.execution.policy_input import blueprint_from
from pve_operator.planning.actions import DestroyContainer
from pve_operator.planning.ownership import parse_record
from pve_operator.planning.pve_access import features_refusal
from tests.integration.test_executor import creates, executor
from tests.unit.test_ct_settings import KEY, policy

NODE = "srv-px1"


def _settings() -> ContainerPolicySpec:
    return policy(
        sshPublicKeys=[KEY],
        nameservers=["192.0.2.53", "2001:db8::53"],
        searchDomain="lab.example",
        onBoot=True,
        startup={"order": 2, "upSeconds": 30},
        protection=True,
        cpuLimit=0.5,
        cpuUnits=200,
        timezone="Europe/Berlin",
        description="Web frontends\nowned by team A",
        networks=[
            {"name": "eth0", "bridge": "vmbr0", "ip6": "auto", "mtu": 1450, "rateMBps": 12.5},
            {"name": "eth1", "bridge": "vmbr0", "ip": "manual", "ip6": "2001:db8::10/64", "gateway6": "2001:db8::1"},
        ],
    )


def test_the_settings_land_in_the_config_and_a_protected_ct_is_still_removed(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    blueprint = blueprint_from(_settings(), password="hunter2-root")
    (created,) = run.apply(creates(1), blueprint)
    assert created.succeeded, created.message
    config = sim.proxmox().nodes(NODE).lxc(3100).config.get()
    assert config["onboot"] == 1 and config["protection"] == 1
    assert config["startup"] == "order=2,up=30"
    assert config["nameserver"] == "192.0.2.53 2001:db8::53" and config["searchdomain"] == "lab.example"
    assert float(config["cpulimit"]) == 0.5 and int(config["cpuunits"]) == 200
    assert config["timezone"] == "Europe/Berlin"
    assert "ip6=auto" in config["net0"] and "mtu=1450" in config["net0"] and "rate=12.5" in config["net0"]
    assert "ip6=2001:db8::10/64" in config["net1"] and "gw6=2001:db8::1" in config["net1"]
    assert config["description"].startswith("Web frontends\nowned by team A\n"), "the user's notes come first"
    assert parse_record(config["description"]) is not None, "followed by the ownership record"
    assert "password" not in config and "ssh-public-keys" not in config, "create-only, not kept in the config"
    assert "hunter2-root" not in created.message

    # Scale-down: PVE refuses to remove a protected CT; the policy's own removal clears the flag first.
    (destroyed,) = run.apply([DestroyContainer(vmid=3100, node=NODE, running=True, reason="scale down")], blueprint)
    assert destroyed.succeeded, destroyed.message
    assert "protection flag cleared" in destroyed.message
    assert 3100 not in {ct["vmid"] for ct in sim.proxmox().cluster.resources.get(type="vm")}


def test_a_password_proxmox_refuses_fails_the_create_without_quoting_it(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    blueprint = replace(blueprint_from(policy()), password="Zq9!")  # PVE: at least 5 characters
    (outcome,) = executor(sim).apply(creates(1), blueprint)
    assert not outcome.succeeded
    assert "password" in outcome.message, outcome.message  # PVE names the parameter ...
    assert "Zq9!" not in outcome.message and "Zq9!" not in str(outcome.error)  # ... never the value


def test_the_feature_rule_checked_before_creating_is_the_one_proxmox_enforces(pve_sim_server: Any) -> None:
    """The operator's token may set nesting but not keyctl; features_refusal says the same beforehand."""
    sim = pve_sim_server(time_scale=0.0)
    authid = "ctoperator@pve!operator"
    allowed, refused = policy(features={"nesting": True}), policy(features={"nesting": True, "keyctl": True})
    assert features_refusal(allowed.template.features, unprivileged=True, authid=authid) is None
    assert features_refusal(refused.template.features, unprivileged=True, authid=authid) is not None

    (ok,) = executor(sim).apply(creates(1), blueprint_from(allowed))
    assert ok.succeeded, ok.message
    (denied,) = executor(sim).apply(creates(2)[1:], blueprint_from(refused))
    assert not denied.succeeded
    assert "only allowed for root@pam" in denied.message


def test_the_drift_sweep_reads_a_few_configs_per_cycle_in_turn(pve_sim_server: Any) -> None:
    from pve_operator.execution.discovery import discover_owned, sweep_configs
    from tests.integration.test_create_windows import operator_client
    from tests.integration.test_executor import IDENTITY, KEY

    sim = pve_sim_server(time_scale=0.0)
    assert all(o.succeeded for o in executor(sim).apply(creates(5), blueprint_from(policy())))
    client = operator_client(sim)
    records: dict[int, Any] = {}
    first = discover_owned(client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY)
    assert all(o.config is not None for o in first), "configs read to prove ownership are handed on"
    swept_first, _ = sweep_configs(client, first, 0, 2)
    assert all(a is b for a, b in zip(swept_first, first, strict=True)), "and not read a second time"
    # Later cycles (records cached): only the sweep reads configs.
    owned = discover_owned(client, client.snapshot(0.0), IDENTITY.uid, IDENTITY.vmid_range, records, key=KEY)
    assert all(o.config is None for o in owned)
    cursor, rounds = 0, []
    for _ in range(3):
        swept, cursor = sweep_configs(client, owned, cursor, 2)
        read = [o.vmid for o in swept if o.config is not None]
        assert all(o.config is not None and int(str(o.config["memory"])) > 0 for o in swept if o.vmid in read)
        rounds.append(read)
    assert rounds == [[3100, 3101], [3102, 3103], [3100, 3104]], "two per cycle, each in turn, wrapping around"


def test_mount_points_stable_macs_and_os_settings_are_created_as_pve_takes_them(pve_sim_server: Any) -> None:
    """Data volumes (mp0, mp1), a MAC that a recreated CT keeps, and arch/ostype the template does not say."""
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    spec = policy(
        networks=[{"name": "eth0", "bridge": "vmbr0", "stableMac": True}, {"name": "eth1", "bridge": "vmbr0"}],
        mountPoints=[
            {"storage": "local-lvm", "sizeGiB": 4, "path": "/srv/data", "backup": True},
            {"storage": "local-lvm", "sizeGiB": 1, "path": "/srv/cache", "readOnly": True, "replicate": False},
        ],
        arch="amd64",
        ostype="debian",
    )
    blueprint = blueprint_from(spec)
    (created,) = run.apply(creates(1), blueprint)
    assert created.succeeded, created.message
    api = sim.proxmox().nodes(NODE).lxc(3100)
    config = api.config.get()
    assert config["mp0"].startswith("local-lvm:vm-3100-disk-") and "mp=/srv/data" in config["mp0"]
    assert "backup=1" in config["mp0"] and "size=4G" in config["mp0"]
    assert "ro=1" in config["mp1"] and "replicate=0" in config["mp1"]
    assert config["arch"] == "amd64" and config["ostype"] == "debian"
    mac = config["net0"].split("hwaddr=")[1].split(",")[0]
    assert mac.startswith("02:"), "locally administered, from the policy and the index"
    # Destroyed and created again (a rolling update, a replacement): same index, same MAC; eth1 random.
    first_eth1 = config["net1"]
    (gone,) = run.apply([DestroyContainer(vmid=3100, node=NODE, running=True, reason="rolling update")], blueprint)
    assert gone.succeeded, gone.message
    (again,) = run.apply(creates(1), blueprint)
    assert again.succeeded, again.message
    config = api.config.get()
    assert config["net0"].split("hwaddr=")[1].split(",")[0] == mac
    assert "hwaddr=" in config["net1"] and config["net1"] != first_eth1
    # Another index gets another stable MAC.
    (other,) = run.apply([replace(creates(2)[1])], blueprint)
    assert other.succeeded, other.message
    other_mac = sim.proxmox().nodes(NODE).lxc(3101).config.get()["net0"].split("hwaddr=")[1].split(",")[0]
    assert other_mac.startswith("02:") and other_mac != mac


def test_notes_and_tags_changed_by_hand_are_put_back_keeping_the_record_and_other_tags(pve_sim_server: Any) -> None:
    from pve_operator.planning.actions import RestoreMarks

    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    (created,) = run.apply(creates(1), blueprint_from(_settings()))
    assert created.succeeded, created.message
    api = sim.proxmox().nodes(NODE).lxc(3100)
    record_line = next(
        line for line in api.config.get()["description"].splitlines() if line.startswith("pve-operator:")
    )
    ours = sorted(t for t in api.config.get()["tags"].split(";") if t != "web")  # the ownership tags stay
    api.config.put(description=f"scribbled\n{record_line}", tags=";".join([*ours, "pve-operator-pinned"]))
    repair = RestoreMarks(3100, NODE, notes="Web frontends\nowned by team A", add_tags=frozenset({"web"}), reason="r")
    (outcome,) = run.apply([repair], blueprint_from(_settings()))
    assert outcome.succeeded, outcome.message
    config = api.config.get()
    assert config["description"].startswith("Web frontends\nowned by team A\n")
    assert parse_record(config["description"]) is not None, "the ownership record is kept"
    assert set(config["tags"].split(";")) == {*ours, "pve-operator-pinned", "web"}


def test_a_nic_changed_by_hand_is_put_back_hot_with_its_mac_and_a_nic_added_by_hand_is_removed(
    pve_sim_server: Any,
) -> None:
    from pve_operator.execution.policy_input import network_settings
    from pve_operator.planning.actions import RestoreConfig
    from pve_operator.planning.reconcile import network_drift

    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    spec = _settings()
    (created,) = run.apply(creates(1), blueprint_from(spec))
    assert created.succeeded, created.message
    api = sim.proxmox().nodes(NODE).lxc(3100)
    assert api.status.current.get()["status"] == "running"
    before = api.config.get()
    mac = before["net0"].split("hwaddr=")[1].split(",")[0]
    api.config.put(
        net0=before["net0"].replace("mtu=1450", "mtu=1500") + ",firewall=1,tag=30",
        net2="name=eth2,bridge=vmbr0,ip=dhcp",
    )
    changed = api.config.get()
    writes, extra, was = network_drift(network_settings(spec), changed)
    assert set(writes) == {"net0"} and extra == ["net2"], (writes, extra)
    repair = RestoreConfig(3100, NODE, {**writes, "delete": ",".join(extra)}, "; ".join(was))
    (outcome,) = run.apply([repair], blueprint_from(spec))
    assert outcome.succeeded, outcome.message
    after = api.config.get(current=1)
    assert "net2" not in after, "hot-unplugged from the running CT"
    assert network_drift(network_settings(spec), after) == ({}, [], []), after
    assert f"hwaddr={mac}" in after["net0"], "the NIC keeps its MAC"
    assert api.status.current.get()["status"] == "running", "applied hot: no restart"


def test_a_retired_tag_is_taken_off_and_the_ownership_tags_never_are(pve_sim_server: Any) -> None:
    from pve_operator.planning.actions import RestoreMarks
    from pve_operator.planning.ownership import ownership_tags

    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    (created,) = run.apply(creates(1), blueprint_from(_settings()))
    assert created.succeeded, created.message
    api = sim.proxmox().nodes(NODE).lxc(3100)
    before = set(api.config.get()["tags"].split(";"))
    api.config.put(tags=";".join(sorted(before | {"blue", "team-a"})))
    ours = {t for t in before if t != "web"}
    # Even an action that names the ownership tags (it never should) leaves them: only "blue" goes.
    repair = RestoreMarks(3100, NODE, remove_tags=frozenset({"blue"}) | ours, reason="r")
    (outcome,) = run.apply([repair], blueprint_from(_settings()))
    assert outcome.succeeded, outcome.message
    after = set(api.config.get()["tags"].split(";"))
    assert after == before | {"team-a"}, after
    assert ours and ours <= after
    assert ownership_tags(run._identity.uid) <= after
